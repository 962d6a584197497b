"""The analysis stage: each qualifying incident is analyzed once, off the ingestion path.

It consumes incident changes like any stage downstream of the incident stage (on its
own queue and thread). An incident qualifies when it opens, reopens or updates at or
above minConfidence and has no analysis yet; of a problem's incidents only the first
does (the incident stage gives its analysis to every member). A few worker threads call Claude
(otel_ai/analysis/claude.py); when their queue is full the offline analysis is written
at once instead. Either way the result goes back to the incident stage as an event
(AnalysisDone), which makes it one more versioned change: the stage never changes an
incident itself.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from otel_ai.analysis.budget import Refusal
from otel_ai.analysis.claude import ClaudeAnalyzer
from otel_ai.analysis.related import OpenIncidents
from otel_ai.events import AnalysisDone, BudgetExhausted, IncidentEvent
from otel_ai.model import Incident

log = logging.getLogger(__name__)

ANALYZE_ON = ("opened", "reopened", "updated")
SEEN_LIMIT = 10_000


class AnalysisStage:
    name = "analysis"

    def __init__(self, analyzer: ClaudeAnalyzer, submit: Callable[[IncidentEvent], None]) -> None:
        self.analyzer = analyzer
        self.rules = analyzer.rules
        self.metrics = analyzer.metrics
        self.submit = submit  # the incident stage's inbox
        analyzer.on_budget_alert = self._budget_alert
        self.open = OpenIncidents()
        self._queue: queue.Queue[tuple[Incident, float]] = queue.Queue(maxsize=self.rules.queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    # ---- consumer side: the stage's own queue thread ----
    def export(self, incident: Incident) -> None:
        self.open.observe(incident)
        if incident.last_change not in ANALYZE_ON or incident.below_min_confidence or incident.analysis is not None:
            return
        key = incident.problem_id or incident.id  # one analysis per problem: its members share it
        with self._lock:
            if key in self._seen or self._stop.is_set():
                return
            self._seen[key] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            self._start_workers()
            try:
                self._queue.put_nowait((incident, time.monotonic()))
                self._in_flight += 1
                full = False
            except queue.Full:
                full = True
            self.metrics.analysis_queue.set(self._queue.qsize())
        if full:
            log.warning("analysis queue full (%d); incident %s gets the offline analysis", self.rules.queue_size,
                        incident.id)
            self.submit(AnalysisDone(incident.id, self.analyzer.offline(incident, "queue_full",
                                                                        self.open.related(incident))))

    def resume(self, incidents: list[Incident]) -> int:
        """After a restart: queue open incidents that qualified but were never analyzed."""
        queued = 0
        for incident in incidents:
            self.open.observe(incident)
        for incident in incidents:
            if incident.analysis is None and not incident.below_min_confidence:
                before = len(self._seen)
                again = incident.copy()
                again.last_change = "opened"
                self.export(again)
                queued += len(self._seen) != before
        return queued

    def _start_workers(self) -> None:
        if self._workers:
            return
        for n in range(self.rules.concurrency):
            worker = threading.Thread(target=self._run, name=f"otel-ai-analysis-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                incident, queued_at = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.metrics.analysis_queue.set(self._queue.qsize())
            try:
                related = self.open.related(incident)
                try:
                    result = self.analyzer.analyze(incident, related)
                except Exception as exc:  # an analysis bug must not lose the incident's diagnosis
                    log.exception("analysis of %s failed", incident.id)
                    result = self.analyzer.offline(incident, f"internal_error: {type(exc).__name__}", related)
                self.metrics.analysis_latency.observe(time.monotonic() - queued_at)
                self.submit(AnalysisDone(incident.id, result))
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _budget_alert(self, refusal: Refusal) -> None:
        budget = self.analyzer.budget
        self.submit(BudgetExhausted(budget.spent_today(), budget.rules.max_cost_per_day, budget.day_end_ns(),
                                    refusal.detail))

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until every queued analysis is done (replay, tests); True if it finished."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True

    def shutdown(self) -> None:
        self._stop.set()
        self.analyzer.close()
        for worker in self._workers:
            worker.join(timeout=5.0)
