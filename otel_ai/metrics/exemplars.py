"""Exemplars from request-duration histograms: example requests, with their traces, per
subject, for incidents whose subject has no (or too few) captured spans: a service that
exports only metrics, or traces sampled away.

Bounded: the latest few per subject and outcome, for the most recently seen subjects.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from otel_ai.metrics.points import RedPoints
from otel_ai.model import Anomaly

PER_SUBJECT = 8
MAX_SUBJECTS = 2000
LOOKBACK_NS = 300 * 10**9  # as the span captures' (otel_ai.suspects)


@dataclass(frozen=True, slots=True)
class MetricExemplar:
    time_ns: int
    trace_id: str  # hex
    span_id: str
    value_ms: float
    error: bool


class ExemplarStore:
    def __init__(self, per_subject: int = PER_SUBJECT, max_subjects: int = MAX_SUBJECTS) -> None:
        self.per_subject = per_subject
        self.max_subjects = max_subjects
        # subject id -> (failing requests, the others)
        self._subjects: OrderedDict[int, tuple[deque, deque]] = OrderedDict()

    def add(self, delta: RedPoints) -> None:
        for exemplar in delta.exemplars:
            row = exemplar.row
            subject = int(delta.subject_id[row])
            kept = self._subjects.get(subject)
            if kept is None:
                if len(self._subjects) >= self.max_subjects:
                    self._subjects.popitem(last=False)
                kept = self._subjects[subject] = (deque(maxlen=self.per_subject), deque(maxlen=self.per_subject))
            else:
                self._subjects.move_to_end(subject)
            error = bool(delta.error[row])
            kept[0 if error else 1].append(MetricExemplar(exemplar.time_ns, exemplar.trace_id.hex(),
                                                          exemplar.span_id.hex(), exemplar.value_ms, error))

    def of_subject(self, subject_id: int) -> list[MetricExemplar]:
        """The subject's exemplars kept: of failing requests, then of the others, oldest first."""
        kept = self._subjects.get(subject_id)
        return [] if kept is None else [*kept[0], *kept[1]]

    def for_anomaly(self, anomaly: Anomaly, limit: int = 5) -> list[MetricExemplar]:
        """The subject's latest exemplars of bad requests before the anomaly: failing ones
        for error rules, slower than the threshold for latency rules, else any."""
        kept = self._subjects.get(anomaly.subject_id)
        if kept is None:
            return []
        since, until = anomaly.event_time_ns - LOOKBACK_NS, anomaly.event_time_ns
        if anomaly.bad_rule == "error":
            pool = list(kept[0])
        elif anomaly.bad_rule == "slow":
            pool = [e for e in (*kept[0], *kept[1]) if e.value_ms > anomaly.slow_threshold_ms]
        else:
            pool = [*kept[0], *kept[1]]
        recent = [e for e in pool if since <= e.time_ns <= until]
        return sorted(recent, key=lambda e: -e.time_ns)[:limit]
