"""What windows count: named, weighted counters computed per batch with numpy.

A detector names the counters it needs; the windows keep only the counters some
enabled detector needs. Each counter adds, per slot and subject, the sum of
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


@dataclass(frozen=True)
class Counter:
    name: str
    select: Callable[[SpanBatch], np.ndarray] | None = None  # rows counted; None: every row
    amount: Callable[[SpanBatch], np.ndarray] | None = None  # per-row value; None: 1 request

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


def retried(batch: SpanBatch) -> np.ndarray:
    """CLIENT spans that retry a call: `http.request.resend_count` > 0, or a repeat of an
    earlier call from the same parent span to the same dependency within the batch (the
    only sign of a retry from instrumentations without resend_count)."""
    out = batch.resend_count > 0
    calls = np.flatnonzero((batch.kind == SPAN_KIND_CLIENT) & (batch.parent_span_id != 0))
    if calls.shape[0] < 2:
        return out
    parent, dependency = batch.parent_span_id[calls], batch.subject_id[calls]
    order = np.lexsort((batch.start_ns[calls], dependency, parent))
    parent, dependency = parent[order], dependency[order]
    repeat = np.zeros(calls.shape[0], dtype=bool)
    repeat[1:] = (parent[1:] == parent[:-1]) & (dependency[1:] == dependency[:-1])
    if repeat.any():
        out = out.copy()
        out[calls[order[repeat]]] = True
    return out


REQUESTS = Counter("requests")
ERRORS = Counter("errors", select=lambda b: b.error)
THROTTLED = Counter("throttled", select=throttled)
AUTH_FAILURES = Counter("auth_failures", select=auth_failed)
RETRIES = Counter("retries", select=retried)
# Sum of durations: busy time / slot length is the mean concurrency (Little's law).
BUSY_MS = Counter("busy_ms", amount=lambda b: b.duration_ms)
