"""The pipeline behind the receivers: decode -> windows -> detectors -> incidents -> downstream.

Receiver threads call consume(): decode the request into a columnar batch (under one
lock: the subject table is shared), and put the batch on a bounded queue; a full queue answers Saturated so the Collector retries. One worker thread
owns everything after that: it adds batches to the windows, closes slots as the
watermark passes, runs the detectors on each closed slot, drives incidents, and
applies the events later stages post back (an analysis is done, the budget ran out).
`feed()` does the same synchronously, for replay and tests.

Each incident change goes downstream (otel_ai/stages.py) to the store and every other
consumer: sinks, the analysis stage, the notification policy, each on its own bounded
queue and thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable

import numpy as np

from otel_ai.baseline import LEARN_LAG_SLOTS, Baselines
from otel_ai.clock import EventClock
from otel_ai.config import Settings
from otel_ai.decode import Decoder, MalformedRequest, SpanBatch
from otel_ai.decode.columns import merge_batches
from otel_ai.detectors import build_detectors
from otel_ai.detectors.base import Detector
from otel_ai.events import IncidentEvent
from otel_ai.exporters.store import StoreExporter
from otel_ai.incidents import IncidentManager
from otel_ai.model import DEPENDENCY, ROUTE
from otel_ai.receiver.consumer import JSON, PROTOBUF, ExportResult, InvalidRequest, Saturated
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.stages import Consumer, Downstream
from otel_ai.store import IncidentStore
from otel_ai.subjects import SubjectTable
from otel_ai.suspects import CaptureStore
from otel_ai.timefmt import NS_PER_S
from otel_ai.windows import WindowStore, WindowView

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
# The worker takes every queued batch at once, up to this many spans, and processes them
# as one: the windows' and suspects' per-batch numpy then runs once per wake-up, not per
# request, so a busy pipeline gets cheaper per span instead of falling behind.
MERGE_SPANS = 16_384


class Pipeline:
    def __init__(self, settings: Settings, store: IncidentStore, consumers: Iterable[Consumer] = (),
                 metrics: SelfMetrics | None = None, use_wall_clock: bool = True,
                 wall_clock_ns: Callable[[], int] = time.time_ns):
        self.settings = settings
        self.metrics = metrics or SelfMetrics()
        self.wall_clock_ns = wall_clock_ns
        w = settings.windows
        self.slot_ns = int(w.slot * NS_PER_S)
        self.subjects = SubjectTable(settings.limits.max_routes_per_service, settings.limits.max_subjects)
        self.detectors: list[Detector] = build_detectors(settings) if settings.enabled else []
        # Windows count, and decode captures, only what some enabled detector needs.
        counters = {c.name: c for d in self.detectors for c in d.counters}
        self.decoder = Decoder(self.subjects)
        self.decoder.capture_marks = tuple({c.name: c for d in self.detectors for c in d.captures}.values())
        longest = max([r.window for r in settings.events.values()] + [300.0])
        self.windows = WindowStore(self.slot_ns, int(np.ceil(longest / w.slot)) + 1, counters.values(),
                                   settings.limits.max_subjects)
        self.baselines = Baselines(w.slot, counters)
        self.clock = EventClock(int(w.allowed_lateness * NS_PER_S), int(w.max_clock_skew * NS_PER_S),
                                int(w.max_span_age * NS_PER_S), use_wall_clock and w.wall_clock_advance)
        self.use_wall_clock = use_wall_clock
        self.captures = CaptureStore()
        self.downstream = Downstream.of([StoreExporter(store), *consumers], self.metrics)
        self.incidents = IncidentManager(settings, store, self.downstream.publish, self.metrics)
        self._events: deque[IncidentEvent] = deque()
        self._applying = 0  # events being applied right now (by the worker or a drain)
        latency_rule = settings.events.get("LATENCY_ANOMALY")
        self._cold_slow_ms = latency_rule.threshold if latency_rule else 1000.0
        self._decode_lock = threading.Lock()
        self._queue: deque[SpanBatch] = deque()
        self._queued_spans = 0
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._worker_waiting = False  # receivers notify only then: a busy worker needs no wake-up
        self._stopping = False
        self.batches_processed = 0  # decoded requests the worker (or feed) is done with
        self.ticks = 0

    # ---- receiving side (any thread) ----
    def decode(self, body: bytes, encoding: str = PROTOBUF) -> SpanBatch:
        with self._decode_lock:
            bounds = self.clock.bounds(self.wall_clock_ns())
            try:
                if encoding == JSON:
                    return self.decoder.decode_json(body, bounds)
                return self.decoder.decode(body, bounds)
            except MalformedRequest as exc:
                raise InvalidRequest(str(exc)) from None

    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        batch = self.decode(body, encoding)
        receiver = self.settings.receiver
        with self._cv:
            if self._stopping or len(self._queue) >= receiver.queue_batches or self._queued_spans + len(batch) > receiver.queue_spans:
                self.metrics.spans_rejected.labels(reason="saturated").inc(batch.spans_total)
                raise Saturated(retry_after_s=2.0)
            self._queue.append(batch)
            self._queued_spans += len(batch)
            self.metrics.queue_depth.set(len(self._queue))
            if self._worker_waiting:
                self._cv.notify()
        self._count_received(batch, transport)
        return ExportResult(batch.rejected, batch.reject_message, batch.spans_total)

    def _count_received(self, batch: SpanBatch, transport: str) -> None:
        self.metrics.spans_received.labels(transport=transport).inc(batch.spans_total - batch.rejected)
        if batch.rejected:
            self.metrics.spans_rejected.labels(reason="invalid_span").inc(batch.rejected)
        if batch.own:
            self.metrics.spans_dropped.labels(reason="own_output").inc(batch.own)

    def feed(self, body: bytes, transport: str = "replay", encoding: str = PROTOBUF) -> ExportResult:
        """Synchronous consume + process (replay, tests): no queue, no worker."""
        batch = self.decode(body, encoding)
        self._count_received(batch, transport)
        self.process(batch)
        self.batches_processed += 1
        self.apply_events()
        return ExportResult(batch.rejected, batch.reject_message, batch.spans_total)

    # ---- events from later stages (any thread) ----
    def submit(self, event: IncidentEvent) -> None:
        """Queue an event for the incident stage; the worker applies it in arrival order."""
        with self._cv:
            if len(self._events) >= MAX_EVENTS:
                self.metrics.sink_dropped.labels(sink="incident-events").inc()
                log.error("incident event inbox full (%d); dropped %r", MAX_EVENTS, event)
                return
            self._events.append(event)
            self._cv.notify()

    def apply_events(self) -> int:
        applied = 0
        while True:
            with self._cv:
                if not self._events:
                    return applied
                event = self._events.popleft()
                self._applying += 1
            try:
                self.incidents.apply(event)
            except Exception:
                log.exception("applying %r failed", event)
            finally:
                with self._cv:
                    self._applying -= 1
                    self._cv.notify_all()
            applied += 1

    # ---- processing side (the worker thread only) ----
    def process(self, batch: SpanBatch) -> None:
        added = self.windows.add(batch)
        if added.late:
            self.metrics.spans_dropped.labels(reason="late").inc(added.late)
        if added.too_early:
            self.metrics.spans_dropped.labels(reason="ahead_of_clock").inc(added.too_early)
        self.clock.observe(batch.max_end_ns, batch.median_end_ns, self.wall_clock_ns())
        self.captures.add(batch.captures)
        self.advance()

    def advance(self, watermark_ns: int | None = None) -> None:
        """Close every slot the watermark has passed, running the detectors on each."""
        if watermark_ns is None:
            watermark_ns = self.clock.watermark(self.wall_clock_ns())
        pending = self.windows.closable(watermark_ns)
        if pending > self.windows.ring:
            # A gap longer than the ring: close a ring's worth, then jump.
            for _ in range(self.windows.ring):
                self._tick(self.windows.close_one())
            self.windows.skip_to(watermark_ns // self.slot_ns)
            pending = 0
        for _ in range(pending):
            self._tick(self.windows.close_one())
        if watermark_ns > 0:
            self.metrics.watermark.set(watermark_ns / NS_PER_S)

    def _tick(self, closed_slot: int) -> None:
        self.ticks += 1
        size = len(self.subjects)
        self.windows.ensure(size)
        kinds = self.subjects.kinds()[:size]
        view = WindowView(self.windows, closed_slot, size, self.baselines, self.subjects.subjects, kinds)
        for detector in self.detectors:
            for anomaly in detector.detect(view):
                self.incidents.on_anomaly(anomaly, self.captures.attribute)
        self._check_health(view)
        self._learn(view, closed_slot, size)
        self.metrics.subjects.labels(kind=ROUTE).set(size - int(kinds.sum()))
        self.metrics.subjects.labels(kind=DEPENDENCY).set(int(kinds.sum()))

    def _check_health(self, view: WindowView) -> None:
        """Ask each watched incident's detector whether its subject looks healthy, and what
        its metric is now (the value at recovery of a resolved incident)."""
        watched = self.incidents.watched()
        if not watched:
            return
        verdicts, values = {}, {}
        for detector in self.detectors:
            mine = [i for i in watched if i.type == detector.event_type]
            ids = {i.id: self.subjects.lookup(i.subject) for i in mine}
            known = np.array([sid for sid in ids.values() if sid is not None and sid < view.size], dtype=np.int64)
            health = detector.healthy(view, known) if known.shape[0] else {}
            for incident in mine:
                sid, key = ids[incident.id], (incident.subject, incident.type)
                verdicts[key] = None if sid is None else health.get(sid)
                values[key] = detector.current(view, sid, incident.data.get("metric")) if sid in health else None
        self.incidents.observe_values(values)
        self.incidents.on_health(view.end_ns, verdicts)

    def _learn(self, view: WindowView, closed_slot: int, size: int) -> None:
        lagged = closed_slot - LEARN_LAG_SLOTS
        frozen = np.zeros(size, dtype=bool)
        for incident in self.incidents.watched():
            sid = self.subjects.lookup(incident.subject)
            if sid is not None:
                frozen[sid] = True
        pos = lagged % self.windows.ring
        self.baselines.learn(self.windows.slot(pos, size), self.windows.hist[:size, pos, :], frozen)
        # Requests slower than baseline p95 + 50 ms are kept for latency suspects.
        warm = self.baselines.warm(size)
        slow = np.full(size, float(self._cold_slow_ms))
        ids = np.flatnonzero(warm)
        if ids.shape[0]:
            p95 = self.baselines.latency_percentile(ids, 0.95)
            slow[ids] = np.where(np.isnan(p95), self._cold_slow_ms, p95 + 50.0)
        self.decoder.slow_threshold_ms = slow

    # ---- worker lifecycle ----
    def start(self, now_ns: int | None = None) -> None:
        restored = self.incidents.restore(now_ns if now_ns is not None else self.wall_clock_ns())
        if restored:
            log.info("restored %d open or recently resolved incidents", restored)
        self._worker = threading.Thread(target=self._run, name="otel-ai-pipeline", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            self.apply_events()
            with self._cv:
                self._worker_waiting = True
                while not self._queue and not self._stopping and not self._events:
                    if not self._cv.wait(timeout=1.0):
                        break
                self._worker_waiting = False
                if self._stopping and not self._queue:
                    return
                taken = self._take_queued()
            try:
                batch = merge_batches(taken) if taken else None
                if batch is None:
                    self.advance()  # quiet: the wall clock moves the watermark
                else:
                    self.process(batch)
            except Exception:
                log.exception("pipeline worker failed on a batch; continuing")
            self.batches_processed += len(taken)  # requests, merged or not

    def _take_queued(self) -> list[SpanBatch]:
        """Every queued batch, up to MERGE_SPANS spans (the worker merges them outside the
        lock). Called holding the lock."""
        taken: list[SpanBatch] = []
        spans = 0
        while self._queue and (not taken or spans + len(self._queue[0]) <= MERGE_SPANS):
            batch = self._queue.popleft()
            taken.append(batch)
            spans += len(batch)
        self._queued_spans -= spans
        self.metrics.queue_depth.set(len(self._queue))
        return taken

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain what was accepted, then stop the worker, then every stage downstream."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout_s)
            self._worker = None
        self.drain(timeout_s)
        self.downstream.close()

    def persisted(self, timeout_s: float) -> bool:
        """Wait until the store has every change made so far."""
        return self.downstream.queues[0].flush(timeout_s)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Until nothing moves: apply posted events, let every downstream stage catch up.
        True if everything settled within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.apply_events()
            with self._cv:
                while self._applying and time.monotonic() < deadline:
                    self._cv.wait(0.05)
            settled = self.downstream.flush(max(0.0, deadline - time.monotonic()))
            with self._cv:
                quiet = not self._events and not self._applying
            if quiet:
                return settled
            if time.monotonic() >= deadline:
                return False

    def queue_depth(self) -> int:
        return len(self._queue)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """End of input: close every slot seen so far, then let every stage catch up (replay)."""
        self.advance(self.clock.flush_watermark())
        return self.drain(timeout_s)
