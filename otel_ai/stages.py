"""What happens after the incident stage: every consumer of incident changes gets its own
bounded queue and thread, so nothing downstream runs under the incident lock.

The incident stage publishes each change (a copy of the incident) while it holds its
lock, and publishing only appends to queues, so every consumer sees an incident's
versions in the order they were made. A consumer that is slow or stuck fills its own
queue; further changes for it are dropped and counted (otel_ai_sink_dropped_total), and
detection, the other consumers and the receivers never wait for it.

Consumers are the sinks (store, JSONL, console, OTLP, the rollback action), the analysis
stage and the notification policy: anything with `export(incident)` and `shutdown()`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from otel_ai.exporters.base import IncidentExporter as Consumer  # one interface for sinks and stages
from otel_ai.model import Incident
from otel_ai.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

QUEUE_CHANGES = 10_000
IDLE_EXIT_S = 30.0  # a consumer thread with nothing to do for this long exits; the next change restarts it


def consumer_name(consumer: Any) -> str:
    return getattr(consumer, "name", None) or type(consumer).__name__


class ChangeQueue:
    """One consumer behind a bounded FIFO and a thread of its own."""

    def __init__(self, consumer: Consumer, metrics: SelfMetrics, maxsize: int = QUEUE_CHANGES) -> None:
        self.consumer = consumer
        self.name = consumer_name(consumer)
        self.metrics = metrics
        self.maxsize = maxsize
        self._items: deque[Incident] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self.dropped = 0

    def put(self, incident: Incident) -> None:
        """Never blocks: called with the incident lock held."""
        with self._cv:
            if self._closed:
                return
            if len(self._items) >= self.maxsize:
                self.dropped += 1
                self.metrics.sink_dropped.labels(sink=self.name).inc()
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("%s is not keeping up: %d incident change(s) dropped so far", self.name, self.dropped)
                return
            self._items.append(incident)
            self.metrics.sink_queue.labels(sink=self.name).set(len(self._items))
            if self._thread is None:
                # Started on first use: most pipelines in tests and replays never open an incident.
                self._thread = threading.Thread(target=self._run, name=f"otel-ai-{self.name}", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                idle_since = time.monotonic()
                while not self._items and not self._closed:
                    self._cv.wait(timeout=1.0)
                    if not self._items and time.monotonic() - idle_since > IDLE_EXIT_S:
                        self._thread = None
                        return
                if not self._items:
                    self._thread = None
                    self._cv.notify_all()
                    return
                incident = self._items.popleft()
                self._busy = True
                self.metrics.sink_queue.labels(sink=self.name).set(len(self._items))
            try:
                self.consumer.export(incident)
            except Exception:  # one broken consumer must not stop the others or lose its thread
                log.exception("%s failed on incident %s v%d", self.name, incident.id, incident.version)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is handled; True if it was."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float) -> None:
        """Handle what is queued (within timeout_s), then stop the thread and the consumer."""
        self.flush(timeout_s)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)
        try:
            self.consumer.shutdown()
        except Exception:
            log.exception("shutting down %s failed", self.name)


@dataclass
class Downstream:
    """The fan-out of incident changes to every consumer's queue."""

    queues: list[ChangeQueue]

    @classmethod
    def of(cls, consumers: Iterable[Consumer], metrics: SelfMetrics) -> Downstream:
        return cls([ChangeQueue(c, metrics) for c in consumers])

    def publish(self, incident: Incident) -> None:
        for q in self.queues:
            q.put(incident)

    def flush(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = True
        for q in self.queues:
            ok = q.flush(max(0.0, deadline - time.monotonic())) and ok
            flush = getattr(q.consumer, "flush", None)  # stages with workers of their own (analysis)
            if flush is not None:
                ok = flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def close(self, timeout_s: float = 5.0) -> None:
        for q in self.queues:
            q.close(timeout_s)

    def dropped(self) -> dict[str, int]:
        return {q.name: q.dropped for q in self.queues}
