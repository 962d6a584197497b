"""The pipeline behind the receivers: decode -> windows and service graph -> detectors ->
localisation -> incidents -> downstream.

Receiver threads call consume() (traces) and consume_metrics() (metrics): decode the
request into a columnar batch or RED deltas (under one lock: the subject table is
shared), and put it on one bounded queue; a full queue answers Saturated so the
Collector retries. One worker thread
owns everything after that: it adds batches to the windows and the service graph, closes
slots as the watermark passes, runs the detectors on each closed slot, localises what
they found down the graph (off the incident lock), drives incidents, and
applies the events later stages post back (an analysis is done, the budget ran out).
`feed()` and `feed_metrics()` do the same synchronously, for replay and tests.

Metrics give the counts, spans give the suspects: where request-duration metrics cover
a route or dependency (otel_ai.metrics.coverage), its spans are no longer counted in its
windows, but still captured for suspects and exemplars and seen by the tail-sampling
check (otel_ai.tail_sampling).

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

from otel_ai.baseline import BURST_MAX_S, LEARN_LAG_SLOTS, Baselines
from otel_ai.clock import EventClock
from otel_ai.config import Settings
from otel_ai.decode import Decoder, MalformedRequest, SpanBatch
from otel_ai.decode.columns import merge_batches
from otel_ai.detectors import build_detectors
from otel_ai.detectors.base import Detector
from otel_ai.events import IncidentEvent
from otel_ai.exporters.store import StoreExporter
from otel_ai.graph.root_cause import Localizer
from otel_ai.graph.service_graph import ServiceGraph
from otel_ai.incidents import IncidentManager
from otel_ai.metrics.stage import MetricsStage, MetricWork
from otel_ai.receiver.consumer import JSON, PROTOBUF, ExportResult, InvalidRequest, MetricsExportResult, Saturated
from otel_ai.model import SYSTEM
from otel_ai.runtime import HEAP_TRIM_INTERVAL_S, trim_heap
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.snapshots import (
    BASELINES, GRAPH, SnapshotWriter, baselines_snapshot, graph_snapshot, graph_state, restore_baselines,
)
from otel_ai.stages import Consumer, Downstream
from otel_ai.store import IncidentStore
from otel_ai.subjects import KIND_CODES, SubjectTable
from otel_ai.suspects import Attribution, CaptureStore
from otel_ai.tail_sampling import TailSamplingMonitor
from otel_ai.timefmt import NS_PER_S, rfc3339
from otel_ai.windows import OPEN_SLOTS, WindowStore, WindowView

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
# The service graph stops learning while an incident is open, for at most this long: a route
# that stays broken for hours must not leave every other component compared with a picture
# of normal from before the day's swing.
GRAPH_FREEZE_MAX_S = 3600.0
JUDGE_SAMPLING_SLOTS = 6  # the tail-sampling verdict is recomputed this often (slots)
TOP_SATURATION = 10  # instances in the telemetry report, most urgent first
# The worker takes every queued batch at once, up to this many spans, and processes them
# as one: the windows' and suspects' per-batch numpy then runs once per wake-up, not per
# request, so a busy pipeline gets cheaper per span instead of falling behind.
MERGE_SPANS = 16_384
# With fewer spans queued the worker waits this long for more before it starts (like the
# Collector's batch processor): a worker that keeps up would otherwise take each request
# alone and pay the per-batch numpy for every 512 spans. Senders never wait for it: a
# request is answered once it is queued.
MERGE_WAIT_S = 0.05
# The worker picks the suspect captures of this many spans' requests per pass (a merge's
# worth): the per-pass numpy is then shared by ~32 requests rather than 8 (the worker's
# path -20 %, scripts/worker_path.py), while a receiver waiting to decode waits for one
# pass (a few ms; bench Export p99 8-9.5 ms either way).
PICK_SPANS = MERGE_SPANS
# Requests wait for the worker to pick their captures (keeping their bodies: ~350 bytes a
# span) only while fewer spans than this are queued: a backlog is picked at decode instead.
DEFER_SPANS = 2 * MERGE_SPANS


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
        self.baselines = Baselines(w.slot, counters, [c.name for c in counters.values() if c.amount is None])
        self.snapshots = SnapshotWriter(store, w.baseline_snapshot, wall_clock_ns=wall_clock_ns)
        self.baselines_origin = "not restored"  # start() restores them
        self.graph = ServiceGraph(self.slot_ns, self.subjects, self.decoder.resources)
        self.localizer = Localizer(self.graph)
        self.clock = EventClock(int(w.allowed_lateness * NS_PER_S), int(w.max_clock_skew * NS_PER_S),
                                int(w.max_span_age * NS_PER_S), use_wall_clock and w.wall_clock_advance)
        self.use_wall_clock = use_wall_clock
        self.captures = CaptureStore()
        self.metrics_stage = MetricsStage(self.subjects)
        self.tail_sampling = TailSamplingMonitor(w.slot)
        self._tail_sampled: set[int] = set()
        self.telemetry: dict = {}  # the latest _telemetry_report
        self.downstream = Downstream.of([StoreExporter(store), *consumers], self.metrics)
        self.incidents = IncidentManager(settings, store, self.downstream.publish, self.metrics)
        self._events: deque[IncidentEvent] = deque()
        self._applying = 0  # events being applied right now (by the worker or a drain)
        latency_rule = settings.events.get("LATENCY_ANOMALY")
        self._cold_slow_ms = latency_rule.threshold if latency_rule else 1000.0
        self._decode_lock = threading.Lock()
        self._queue: deque[SpanBatch | MetricWork] = deque()
        self._queued_spans = 0
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._processing = False  # the worker is on a batch it took off the queue
        self._next_trim = time.monotonic() + HEAP_TRIM_INTERVAL_S
        self._worker_waiting = False  # receivers notify only then: a busy worker needs no wake-up
        self._worker_gathering = False  # waiting for a merge's worth: notify once there is one
        self._idle_waiters = 0  # wait_idle() callers: the worker stops gathering for them
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
                # The worker picks the captures, many requests at once, while it keeps up; a
                # request waiting longer would hold its body that long, so then they are picked now.
                return self.decoder.decode(body, bounds, defer_captures=self._queued_spans < DEFER_SPANS)
            except MalformedRequest as exc:
                raise InvalidRequest(str(exc)) from None

    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        batch = self.decode(body, encoding)
        if not self._enqueue(batch):
            self.metrics.spans_rejected.labels(reason="saturated").inc(batch.spans_total)
            raise Saturated(retry_after_s=2.0)
        self._count_received(batch, transport)
        return ExportResult(batch.rejected, batch.reject_message, batch.spans_total)

    def _enqueue(self, item: SpanBatch | MetricWork) -> bool:
        """False when the queue is full (or the pipeline stopping): the sender retries."""
        receiver = self.settings.receiver
        with self._cv:
            if self._stopping or len(self._queue) >= receiver.queue_batches or self._queued_spans + len(item) > receiver.queue_spans:
                return False
            self._queue.append(item)
            self._queued_spans += len(item)
            self.metrics.queue_depth.set(len(self._queue))
            # A busy worker takes the queue when done: no wake-up to pay for.
            if self._worker_waiting or (self._worker_gathering and self._merge_ready()):
                self._cv.notify_all()  # all: a wait_idle() caller waits on the same condition
        return True

    # ---- metrics (any thread)
    def decode_metrics(self, body: bytes, encoding: str = PROTOBUF) -> tuple:
        """(the decoded request, the work for the worker); InvalidRequest if it does not parse."""
        with self._decode_lock:
            return self.metrics_stage.decode(body, encoding, self.clock.bounds(self.wall_clock_ns()))

    def consume_metrics(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> MetricsExportResult:
        decoded, work = self.decode_metrics(body, encoding)
        if len(work) and not self._enqueue(work):
            self.metrics.data_points_rejected.labels(reason="saturated").inc(decoded.data_points)
            raise Saturated(retry_after_s=2.0)
        self._count_metrics_received(decoded, transport)
        return MetricsExportResult(decoded.rejected, decoded.reject_message, decoded.data_points)

    def feed_metrics(self, body: bytes, transport: str = "replay", encoding: str = PROTOBUF) -> MetricsExportResult:
        """Synchronous consume_metrics + process (replay, tests)."""
        decoded, work = self.decode_metrics(body, encoding)
        self._count_metrics_received(decoded, transport)
        self.process(work)
        self.batches_processed += 1
        self.apply_events()
        return MetricsExportResult(decoded.rejected, decoded.reject_message, decoded.data_points)

    def _count_metrics_received(self, decoded, transport: str) -> None:
        self.metrics.data_points_received.labels(transport=transport).inc(decoded.data_points - decoded.rejected)
        if decoded.rejected:
            self.metrics.data_points_rejected.labels(reason="invalid_data_point").inc(decoded.rejected)

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
            self._cv.notify_all()  # all: the worker may not be the first waiter (wait_idle callers)

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
    def process(self, batch: SpanBatch | MetricWork) -> None:
        if isinstance(batch, MetricWork):
            self._process_metrics(batch)
            return
        if batch.capture_source is not None:
            self._pick_captures([batch], batch)
        added = self.windows.add(batch, counted_by_metrics=self.metrics_stage.coverage.covered_rows(batch))
        # A new subject's baselines are made with its windows, not at the first slot close:
        # a slot close is the heap's busiest moment, and memory made then stays fragmented.
        self.baselines.ensure(self.windows.rows)
        if added.late:
            self.metrics.spans_dropped.labels(reason="late").inc(added.late)
        if added.too_early:
            self.metrics.spans_dropped.labels(reason="ahead_of_clock").inc(added.too_early)
        self.tail_sampling.add_spans(batch)
        self.metrics_stage.note_span_routes(batch, self.decoder.resources)
        self.graph.add(batch)
        self.clock.observe(batch.max_end_ns, batch.median_end_ns, self.wall_clock_ns())
        self.captures.add(batch.captures)
        self.advance()

    def _pick_captures(self, batches: list[SpanBatch], merged: SpanBatch | None = None) -> None:
        """Suspect captures of requests decoded without them, about PICK_SPANS spans per
        pass (a merge's worth), under the decode lock: picking reads attributes through the
        decoder's shared interning. The capture counters' marks come first, for all of them
        at once. merged: the batches merged, whose columns a pass over all of them reads,
        and which then gets the captures too."""
        with self._decode_lock:
            self.decoder.mark_captures(batches, merged)
        start = spans = 0
        for end, batch in enumerate(batches, 1):
            spans += len(batch)
            if spans >= PICK_SPANS or end == len(batches):
                whole = merged if start == 0 and end == len(batches) else None  # its columns serve
                with self._decode_lock:
                    self.decoder.pick_captures(batches[start:end], whole)
                start, spans = end, 0
        if merged is not None and merged is not batches[0]:
            merged.captures = [c for b in batches for c in b.captures]

    def _process_metrics(self, work: MetricWork) -> None:
        """RED deltas into the windows (spread over their slots), utilization into the
        saturation series; the watermark then waits an export interval for metrics."""
        added, delta = self.metrics_stage.apply(work, self.windows)
        self.metrics.metric_streams.set(len(self.metrics_stage.converter))
        if added.late:
            self.metrics.data_points_dropped.labels(reason="late").inc(added.late)
        if added.too_early:
            self.metrics.data_points_dropped.labels(reason="ahead_of_clock").inc(added.too_early)
        self.tail_sampling.add_metrics(delta)
        ends = delta.end_ns if len(delta) else np.array([s.time_ns for s in work.utilization], np.int64)
        if ends.shape[0]:
            self.clock.observe(int(ends.max()), int(np.median(ends)), self.wall_clock_ns())
        self.clock.metric_lateness_ns = self.metrics_stage.lateness_ns(self.clock.max_end_ns)
        self.captures.ahead_ns = self.clock.metric_lateness_ns  # what the watermark waits for metrics
        self.advance()

    def _attribute(self, anomaly) -> Attribution:
        """Suspects from captured spans; the metrics' exemplars where spans gave too few."""
        found = self.captures.attribute(anomaly)
        wanted = 5 - len(found.exemplar_trace_ids)
        if wanted > 0:
            for exemplar in self.metrics_stage.exemplars.for_anomaly(anomaly, wanted):
                if exemplar.trace_id not in found.exemplar_trace_ids:
                    found.exemplar_trace_ids.append(exemplar.trace_id)
                    found.exemplar_span_ids.append(exemplar.span_id)
        return found

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
        self._close_graph_slot(closed_slot)
        view = WindowView(self.windows, closed_slot, size, self.baselines, self.subjects.subjects, kinds,
                          self.metrics_stage.saturation)
        anomalies = [anomaly for detector in self.detectors for anomaly in detector.detect(view)]
        self.localizer.attach(anomalies, closed_slot)
        for anomaly in anomalies:
            self.incidents.on_anomaly(anomaly, self._attribute)
        self._check_health(view)
        self._learn(view, closed_slot, size)
        self._watch_sampling(view)
        if self.snapshots.due():
            self._save_baselines()
        tracked = np.bincount(kinds, minlength=len(KIND_CODES))
        for kind, code in KIND_CODES.items():
            self.metrics.subjects.labels(kind=kind).set(int(tracked[code]))

    def _watch_sampling(self, view: WindowView) -> None:
        """Every minute of event time: which subjects' traces look tail-sampled (check,
        /metrics and the log say so), and how many subjects metrics count."""
        self.tail_sampling.age()
        if self.ticks % JUDGE_SAMPLING_SLOTS:
            return
        found = self.tail_sampling.judge()
        self.metrics.tail_sampling_suspected.set(len(found))
        for suspected in found:
            if suspected.subject_id not in self._tail_sampled:
                log.warning("%s: traces look tail-sampled (%s; span error share %.1f%%); rates come out too high "
                            "unless otel-ai gets its traces before the tail_sampling processor (docs/metrics.md)",
                            self.subjects.subjects[suspected.subject_id].label(), suspected.why,
                            100 * suspected.span_error_share)
        self._tail_sampled = {s.subject_id for s in found}
        coverage = self.metrics_stage.coverage
        counted = int((coverage.until_ns + coverage.lapse_ns >= view.end_ns).sum())
        self.metrics.metric_subjects.set(counted)
        self.telemetry = self._telemetry_report(found, counted)

    def _telemetry_report(self, tail_sampled: list, counted: int) -> dict:
        """What GET /api/telemetry (and so `otel-ai check`) shows; built here, on the worker,
        and replaced whole, so the admin thread never reads the stores themselves."""
        stage = self.metrics_stage
        return {
            "metrics": {"streams": len(stage.converter), "subjects_counted_from_metrics": counted},
            "tail_sampling": [{**_described(self.subjects.subjects[s.subject_id]), "span_error_share":
                               s.span_error_share, "metric_error_share": s.metric_error_share, "why": s.why}
                              for s in tail_sampled],
            "saturation": [{"service": f.series.service, "instance": f.series.instance, "resource": f.series.resource,
                            "source": f.series.source, "utilization": round(f.ratio, 4),
                            "seconds_to_saturation": f.seconds_to_saturation}
                           for f in stage.saturation.forecasts()[:TOP_SATURATION]],
        }

    def _close_graph_slot(self, closed_slot: int) -> None:
        """Join the spans that ended by the slot's end and add what they measured to the
        graph's stats, before the detectors run, so a localisation sees this slot. While an
        incident younger than GRAPH_FREEZE_MAX_S is open no component's baseline learns: the
        root sits below the incident's subject, and which components are the fault's is what
        localisation has to find."""
        slot_end_ns = (closed_slot + 1) * self.slot_ns
        young = slot_end_ns - int(GRAPH_FREEZE_MAX_S * NS_PER_S)
        self.graph.stats.frozen = any(i.subject.kind != SYSTEM and i.opened_at_ns > young
                                      for i in self.incidents.watched())
        self.graph.close_slot(closed_slot)
        self.metrics.graph_traces_kept.set(1.0 / (1 << self.graph.join.level))

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
        lagged_end_ns = view.end_ns - LEARN_LAG_SLOTS * self.slot_ns
        frozen = np.zeros(size, dtype=bool)
        outage = np.zeros(size, dtype=bool)
        for incident in self.incidents.watched():
            sid = self.subjects.lookup(incident.subject)
            if sid is not None and sid < size:
                frozen[sid] = True
                outage[sid] |= lagged_end_ns - incident.opened_at_ns > BURST_MAX_S * NS_PER_S
        pos = lagged % self.windows.ring
        self.baselines.learn(self.windows.slot(pos, size), self.windows.hist[:size, pos, :], frozen, outage)
        # Requests slower than baseline p95 + 50 ms are kept for latency suspects.
        warm = self.baselines.warm(size)
        slow = np.full(size, float(self._cold_slow_ms))
        ids = np.flatnonzero(warm)
        if ids.shape[0]:
            p95 = self.baselines.latency_percentile(ids, 0.95)
            slow[ids] = np.where(np.isnan(p95), self._cold_slow_ms, p95 + 50.0)
        self.decoder.slow_threshold_ms = slow

    def _save_baselines(self) -> None:
        self.snapshots.put(BASELINES, baselines_snapshot(self.subjects, self.baselines))
        self.snapshots.put(GRAPH, graph_snapshot(self.graph.state()))

    def _restore_baselines(self) -> str:
        """Put the saved baselines (and the service graph's) back; what happened, in words
        for the start-up banner. A damaged snapshot costs the learning it held, never the start."""
        try:
            saved = self.snapshots.load(BASELINES)
            if saved is None:
                return "none saved yet: learning from scratch (static thresholds for the first minutes)"
            restored = restore_baselines(saved[1], self.subjects, self.baselines)
        except (KeyError, ValueError) as exc:
            log.warning("ignoring the saved baselines: %s", exc)
            return f"the saved ones are unusable ({exc}): learning from scratch"
        return f"restored {restored} routes and dependencies{self._restore_graph()}, saved {rfc3339(saved[0])}"

    def _restore_graph(self) -> str:
        try:
            saved = self.snapshots.load(GRAPH)
            if saved is None:
                return ""
            return f" and {self.graph.restore(graph_state(saved[1]))} graph components"
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            log.warning("ignoring the saved service graph: %s", exc)
            return " (the saved service graph is unusable: relearning it)"

    # ---- worker lifecycle ----
    def start(self, now_ns: int | None = None) -> None:
        """Restore what the store remembers (baselines, open incidents), then run the
        worker and save the baselines periodically from now on."""
        self.baselines_origin = self._restore_baselines()
        restored = self.incidents.restore(now_ns if now_ns is not None else self.wall_clock_ns())
        if restored:
            log.info("restored %d open or recently resolved incidents", restored)
        self.snapshots.start()
        self._worker = threading.Thread(target=self._run, name="otel-ai-pipeline", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            ticks = self.ticks
            self.apply_events()
            with self._cv:
                self._wait_for_work()
                if self._stopping and not self._queue:
                    return
                taken = self._take_queued()
                self._processing = bool(taken)
            try:
                batch = merge_batches(taken) if taken else None
                if taken and isinstance(taken[0], SpanBatch):
                    self._pick_captures(taken, batch)
                if batch is None:
                    self.advance()  # quiet: the wall clock moves the watermark
                else:
                    self.process(batch)
            except Exception:
                log.exception("pipeline worker failed on a batch; continuing")
            finally:
                with self._cv:
                    self.batches_processed += len(taken)  # requests, merged or not
                    self._processing = False
                    self._cv.notify_all()
            # Outside the lock: receivers keep queueing. Right after a slot closed too: its
            # temporaries (the join's, the detectors') were the heap's largest burst.
            if self.ticks != ticks or time.monotonic() >= self._next_trim:
                trim_heap()
                self._next_trim = time.monotonic() + HEAP_TRIM_INTERVAL_S

    def _wait_for_work(self) -> None:
        """Until something is queued (or a second passes: the wall clock moves the
        watermark); then, for span batches, until a merge's worth is queued or MERGE_WAIT_S
        passed, unless events, a stop or a wait_idle() caller want the worker now. Not
        before the windows open: the first batch's times say where they start, so it goes
        as it came. Called holding the lock."""
        self._worker_waiting = True
        while not self._queue and not self._stopping and not self._events:
            if not self._cv.wait(timeout=1.0):
                break
        self._worker_waiting = False
        if not self._queue or not isinstance(self._queue[0], SpanBatch) or self.windows.first_open_slot is None:
            return
        self._worker_gathering = True
        deadline = time.monotonic() + MERGE_WAIT_S
        while (not self._merge_ready() and not self._stopping and not self._events
               and not self._idle_waiters and (left := deadline - time.monotonic()) > 0):
            self._cv.wait(left)
        self._worker_gathering = False

    def _merge_ready(self) -> bool:
        """A merge's worth is queued, or the queue is half full (many small requests, or a
        small queue): gathering longer would turn senders away; or a request that cannot
        join the merge came."""
        receiver = self.settings.receiver
        last = self._queue[-1] if self._queue else None
        return (self._queued_spans >= min(MERGE_SPANS, receiver.queue_spans // 2)
                or len(self._queue) >= receiver.queue_batches // 2
                or (isinstance(last, SpanBatch) and last.max_end_ns >= self._mergeable_until_ns()))

    def _mergeable_until_ns(self) -> int:
        """Requests with spans ending this late do not join a merge: they would fall ahead of
        the windows' open slots, which move on only when a batch is processed (requests
        sent faster than real time: a backlog, a replay through the receiver). 0 before the
        windows open: the first request places them, alone."""
        first = self.windows.first_open_slot
        return 0 if first is None else (first + OPEN_SLOTS) * self.slot_ns

    def _take_queued(self) -> list[SpanBatch] | list[MetricWork]:
        """Every queued span batch in a row, up to MERGE_SPANS spans and while their spans
        fit the windows' open slots (the worker merges them outside the lock), or the one
        metrics request at the queue's head. Called holding the lock."""
        if self._queue and isinstance(self._queue[0], MetricWork):
            work = self._queue.popleft()
            self._queued_spans -= len(work)
            self.metrics.queue_depth.set(len(self._queue))
            return [work]
        taken: list[SpanBatch] = []
        spans = 0
        until_ns = self._mergeable_until_ns()
        while (self._queue and isinstance(self._queue[0], SpanBatch)
               and (not taken or (spans + len(self._queue[0]) <= MERGE_SPANS
                                  and self._queue[0].max_end_ns < until_ns))):
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
        if self.snapshots.running:
            self._save_baselines()
            self.snapshots.close(timeout_s)
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

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Until everything queued so far went through the worker; True if it did in time."""
        with self._cv:  # the worker notifies after each item
            self._idle_waiters += 1
            self._cv.notify_all()  # a worker gathering a merge starts now
            try:
                return self._cv.wait_for(lambda: not self._queue and not self._processing, timeout_s)
            finally:
                self._idle_waiters -= 1

    def flush(self, timeout_s: float = 30.0) -> bool:
        """End of input: close every slot seen so far, then let every stage catch up (replay)."""
        self.advance(self.clock.flush_watermark())
        return self.drain(timeout_s)


def _described(subject) -> dict:
    return {"kind": subject.kind, "service": subject.service, "method": subject.method, "route": subject.route,
            "label": subject.label()}
