"""The tail-sampling check over live traffic (otel_ai.sampling.likely_tail_sampling): per
subject, what its spans say (weighted requests and errors, spans carrying a sampling
attribute) beside what its request-duration metrics say, as sums that halve every
HALF_LIFE_S of event time, so the check looks at the last quarter hour or so.

Spans count here whether or not metrics give the subject's counts: comparing the two is
the point. Per batch it is two bincounts; the verdict is recomputed every minute.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otel_ai.decode import SpanBatch
from otel_ai.metrics.points import RedPoints
from otel_ai.sampling import TailSamplingEvidence, likely_tail_sampling

HALF_LIFE_S = 600.0
_FIELDS = tuple(TailSamplingEvidence.__dataclass_fields__)
(_SPANS, _SPAN_REQUESTS, _SPAN_ERRORS, _METRIC_REQUESTS, _METRIC_ERRORS, _ERROR_SPANS, _MARKED_ERROR_SPANS,
 _OK_SPANS, _MARKED_OK_SPANS) = range(len(_FIELDS))


@dataclass(frozen=True, slots=True)
class Suspected:
    """One subject whose traces look tail-sampled."""

    subject_id: int
    span_error_share: float
    metric_error_share: float | None  # None: flagged by the sampling attribute alone
    why: str


class TailSamplingMonitor:
    def __init__(self, slot_s: float) -> None:
        self.decay = 0.5 ** (slot_s / HALF_LIFE_S)
        self.sums = np.zeros((0, len(_FIELDS)))
        self.suspected: list[Suspected] = []  # the latest verdict, replaced whole (read by the admin API)

    def _rows_of(self, subject_id: np.ndarray) -> tuple[np.ndarray, int]:
        """The subject ids as indexes, and how many rows of sums they reach (grown to fit;
        subject ids are bounded by the subject table's cap)."""
        sid = subject_id.astype(np.intp)
        size = int(sid.max()) + 1
        grow = size - self.sums.shape[0]
        if grow > 0:
            self.sums = np.concatenate((self.sums, np.zeros((max(grow, 64), len(_FIELDS)))))
        return sid, size

    def add_spans(self, batch: SpanBatch) -> None:
        if len(batch) == 0:
            return
        sid, size = self._rows_of(batch.subject_id)
        error = batch.error.astype(np.intp)
        # Spans by (subject, failed, sampling attribute): five of the columns in one pass.
        counts = np.bincount(sid * 4 + error * 2 + batch.sampling_attribute, minlength=size * 4).reshape(size, 4)
        weighted = np.bincount(sid * 2 + error, weights=batch.weight, minlength=size * 2).reshape(size, 2)
        s = self.sums[:size]
        s[:, _SPANS] += counts.sum(axis=1)
        s[:, _OK_SPANS] += counts[:, 0] + counts[:, 1]
        s[:, _MARKED_OK_SPANS] += counts[:, 1]
        s[:, _ERROR_SPANS] += counts[:, 2] + counts[:, 3]
        s[:, _MARKED_ERROR_SPANS] += counts[:, 3]
        s[:, _SPAN_REQUESTS] += weighted.sum(axis=1)
        s[:, _SPAN_ERRORS] += weighted[:, 1]

    def add_metrics(self, delta: RedPoints) -> None:
        if len(delta) == 0:
            return
        sid, size = self._rows_of(delta.subject_id)
        found = np.bincount(sid * 2 + delta.error, weights=delta.count, minlength=size * 2).reshape(size, 2)
        self.sums[:size, _METRIC_REQUESTS] += found.sum(axis=1)
        self.sums[:size, _METRIC_ERRORS] += found[:, 1]

    def age(self) -> None:
        """One slot has passed."""
        self.sums *= self.decay

    def judge(self) -> list[Suspected]:
        evidence = TailSamplingEvidence(*(self.sums[:, i] for i in range(len(_FIELDS))))
        verdict = likely_tail_sampling(evidence)
        found = []
        for sid in np.flatnonzero(verdict.suspected).tolist():
            by_share = bool(verdict.by_error_share[sid])
            found.append(Suspected(sid, round(float(verdict.span_error_share[sid]), 4),
                                   round(float(verdict.metric_error_share[sid]), 4) if by_share else None,
                                   "span error share far above the metrics' error share" if by_share
                                   else "a sampling attribute on the failing spans only"))
        self.suspected = found
        return found
