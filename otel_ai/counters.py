"""What windows count: named, weighted counters computed per batch with numpy.

A detector names the counters it needs; the windows keep only the counters some
enabled detector needs (and always REQUESTS and SQUARED_WEIGHTS). Each counter adds, per slot and subject, the sum of
`batch.weight` over the rows it selects (or weight x amount, e.g. milliseconds of busy
time), so sampled traffic counts as the traffic it stands for. A detector that needs
something new defines its own Counter next to it; it only reads SpanBatch columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from otel_ai.decode import SPAN_KIND_CLIENT, SpanBatch

GRPC_RESOURCE_EXHAUSTED = 8
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16
REPEAT_WINDOW_NS = 5_000_000_000  # a repeat of a call this soon after it is a retry
REPEAT_CALLS = 1_024  # earlier calls remembered for that: two to five requests' worth, as the two batches before
_MIX = np.uint64(0x9E3779B97F4A7C15)  # (parent span, dependency) -> one 64-bit key


@dataclass(frozen=True)
class Counter:
    name: str
    select: Callable[[SpanBatch], np.ndarray] | None = None  # rows counted; None: every row
    amount: Callable[[SpanBatch], np.ndarray] | None = None  # per-row value; None: 1 request
    # As a detector's capture: False labels the requests captured anyway (errors, the
    # sample) without capturing more for it alone, where its rows are common and cheap
    # to miss (a second call to a cache; the failing retries are captured as errors).
    capture_alone: bool = True
    # Only spans can tell (it reads the call tree: parent span ids). Where metrics give a
    # subject's counts (otel_ai.metrics.coverage), spans keep counting this counter alone.
    spans_only: bool = False

    def rows(self, batch: SpanBatch) -> np.ndarray:
        """The rows this counter selects, computed once per batch (decode's captures and
        the windows both ask)."""
        found = batch.derived.get(self.name)
        if found is None:
            found = batch.derived[self.name] = self.select(batch)
        return found

    def increments(self, batch: SpanBatch) -> np.ndarray | None:
        """Per row, what this counter adds; None when it selects no row of the batch."""
        values = batch.weight if self.amount is None else batch.weight * self.amount(batch)
        if self.select is None:
            return values
        rows = self.rows(batch)
        return np.where(rows, values, 0.0) if rows.any() else None


def throttled(batch: SpanBatch) -> np.ndarray:
    return (batch.http_status == 429) | (batch.grpc_status == GRPC_RESOURCE_EXHAUSTED)


def auth_failed(batch: SpanBatch) -> np.ndarray:
    status, grpc = batch.http_status, batch.grpc_status
    return (status == 401) | (status == 403) | (grpc == GRPC_UNAUTHENTICATED) | (grpc == GRPC_PERMISSION_DENIED)


class Retries:
    """Selects CLIENT spans that retry a call: `http.request.resend_count` > 0, or a repeat
    of a call from the same parent span to the same dependency, when the last such call
    came at most `calls` calls earlier and ended at most REPEAT_WINDOW_NS before (a retry
    chain often straddles two exports). Stateful: each pipeline needs its own, fed every
    span once and in order (Counter.rows caches the answer on the batch). Bounded by calls
    rather than batches, so feeding requests one by one or many at once gives the same
    answer; the worker feeds a merge's requests at once."""

    def __init__(self, window_ns: int = REPEAT_WINDOW_NS, calls: int = REPEAT_CALLS):
        self.window_ns = window_ns
        self.calls = calls
        self._keys = np.zeros(0, np.uint64)  # the last `calls` calls, in the order they came
        self._ends = np.zeros(0, np.int64)

    def __call__(self, batch: SpanBatch) -> np.ndarray:
        out = batch.resend_count > 0
        calls = np.flatnonzero((batch.kind == SPAN_KIND_CLIENT) & (batch.parent_span_id != 0))
        if calls.shape[0] == 0:
            return out
        # uint64 arrays wrap silently on overflow: the mix needs no errstate.
        keys = batch.parent_span_id[calls] ^ (batch.subject_id[calls].astype(np.uint64) * _MIX)
        every = np.concatenate((self._keys, keys))
        ends = np.concatenate((self._ends, batch.end_ns[calls]))
        # One stable sort: equal keys lie together in the order they came, so each call's
        # predecessor in the sort is the last earlier call with its key.
        order = np.argsort(every, kind="stable")
        earlier, later = order[:-1], order[1:]
        follows = np.zeros(every.shape[0], dtype=bool)
        follows[1:] = ((every[later] == every[earlier]) & (later - earlier <= self.calls)
                       & (ends[later] - ends[earlier] <= self.window_ns))
        repeat = np.empty(every.shape[0], dtype=bool)
        repeat[order] = follows
        repeat = repeat[self._keys.shape[0]:]
        self._keys, self._ends = every[-self.calls:], ends[-self.calls:]
        if repeat.any():
            out = out.copy()
            out[calls[repeat]] = True
        return out


REQUESTS = Counter("requests")
# Sum of squared adjusted counts. With REQUESTS it gives the effective sample size (Kish:
# (sum w)^2 / sum w^2), so that the significance tests weigh a few sampled spans standing
# for many requests as the few observations they are. Every window keeps it.
SQUARED_WEIGHTS = Counter("squared_weights",
                          amount=lambda b: np.ones_like(b.weight) if b.aggregated else b.weight)
ERRORS = Counter("errors", select=lambda b: b.error)
THROTTLED = Counter("throttled", select=throttled)
AUTH_FAILURES = Counter("auth_failures", select=auth_failed)
# Sum of durations: busy time / slot length is the mean concurrency (Little's law).
BUSY_MS = Counter("busy_ms", amount=lambda b: b.duration_ms)
