"""Metrics give the counts, spans give the suspects: which subjects' counts come from
request-duration metrics, and which span rows therefore are not counted again.

A subject (route or dependency) is covered from its first counted metric point on, and
stays covered until `lapse` after its latest one: a few export intervals (at least 30 s,
at most 10 minutes), so a late export does not let spans count for a moment. Spans of
a covered subject are not counted in its windows (only counters that need the call tree,
`Counter.spans_only`, still count them); they are still decoded, captured for suspects
and exemplars, and seen by the tail-sampling check. When the metrics stop for longer
than the lapse, spans count again.

The switch over: when a subject's first metric point arrives, its spans have already
counted the requests of that point's interval, so that point only starts the coverage;
without spans it counts as it is.
"""
from __future__ import annotations

import numpy as np

from otel_ai.counters import REQUESTS
from otel_ai.decode import SpanBatch
from otel_ai.metrics.points import RedPoints
from otel_ai.windows import WindowStore

LAPSE_INTERVALS = 3
MIN_LAPSE_NS = 30 * 10**9
MAX_LAPSE_NS = 600 * 10**9


class MetricCoverage:
    """Per subject id: the end of its latest metric point and how long that covers."""

    def __init__(self) -> None:
        self.until_ns = np.zeros(0, dtype=np.int64)  # 0: never covered
        self.lapse_ns = np.zeros(0, dtype=np.int64)
        self.active = False  # any subject ever covered: without metrics, spans need no mask

    def _ensure(self, size: int) -> None:
        grow = size - self.until_ns.shape[0]
        if grow > 0:
            self.until_ns = np.concatenate((self.until_ns, np.zeros(max(grow, 64), dtype=np.int64)))
            self.lapse_ns = np.concatenate((self.lapse_ns, np.zeros(max(grow, 64), dtype=np.int64)))

    def covered_rows(self, batch: SpanBatch) -> np.ndarray | None:
        """Span rows whose subject's counts come from metrics at the span's end time; None
        when there are none (the usual case without metrics: no mask at all)."""
        if not self.active or len(batch) == 0:
            return None
        sid = batch.subject_id
        inside = sid < self.until_ns.shape[0]
        safe = np.where(inside, sid, 0)
        until = np.where(inside, self.until_ns[safe], 0)
        covered = (until > 0) & (batch.end_ns <= until + self.lapse_ns[safe])
        return covered if covered.any() else None

    def admit(self, delta: RedPoints, windows: WindowStore) -> np.ndarray:
        """Which delta rows to count (a bool per row), and the coverage they extend."""
        if len(delta) == 0:
            return np.zeros(0, dtype=bool)
        sid = delta.subject_id.astype(np.intp)
        self._ensure(int(sid.max()) + 1)
        start = np.where(delta.start_ns > 0, delta.start_ns, delta.end_ns)
        lapsed = start > self.until_ns[sid] + self.lapse_ns[sid]
        count = np.ones(len(delta), dtype=bool)
        slot_ns = windows.slot_ns
        for subject in np.unique(sid[lapsed]).tolist():  # subjects starting (or resuming) coverage: few
            rows = np.flatnonzero(lapsed & (sid == subject))
            first, last = int(start[rows].min()) // slot_ns, int(delta.end_ns[rows].max()) // slot_ns
            if windows.held(REQUESTS.name, subject, first, last) > 0:
                count[rows] = False  # spans already counted these requests
        lapse = np.zeros(self.lapse_ns.shape[0], dtype=np.int64)
        np.maximum.at(lapse, sid, np.clip(LAPSE_INTERVALS * (delta.end_ns - start), MIN_LAPSE_NS, MAX_LAPSE_NS))
        touched = np.unique(sid)
        self.lapse_ns[touched] = lapse[touched]  # the latest export interval decides, not the longest ever
        np.maximum.at(self.until_ns, sid, delta.end_ns)
        self.active = True
        return count
