"""RED deltas as rows the windows count, like spans.

A delta point says how many requests a stream served in (start, end]. Its requests are
spread over the event-time slots of that interval in proportion to the overlap (an
export every 10 s rarely lines up with the slots), one row per point and slot. Each row
is a span-like row whose weight is the requests it stands for, so every counter that
reads status columns (errors, 429s, 401/403s) counts metric rows exactly as it counts
spans; its latency comes as the point's re-binned histogram instead of one duration.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otel_ai.decode import SpanBatch
from otel_ai.histogram import BINS, LOWER_EDGES_MS, UPPER_EDGES_MS
from otel_ai.metrics.points import RedPoints

# A first point may cover minutes (a process that started before its first export):
# spread over at most this many slots, the earliest part folded into the first of them.
MAX_SLOTS_PER_POINT = 32
# Where a bin's requests are assumed to lie: the geometric middle (bin 0: 0.25 ms).
_BIN_MIDDLE_MS = np.sqrt(np.maximum(LOWER_EDGES_MS, 0.125) * UPPER_EDGES_MS)


@dataclass(slots=True)
class MetricRows:
    """Span-like rows for the windows, and each row's latency histogram."""

    batch: SpanBatch
    hist: np.ndarray  # (rows, BINS) float64
    requests: np.ndarray  # per row: the requests it stands for (float64; the batch's weight is float32)


def busy_ms(hist: np.ndarray) -> np.ndarray:
    """Estimated total duration of the requests in each (.., BINS) histogram."""
    return hist @ _BIN_MIDDLE_MS


def slot_rows(delta: RedPoints, slot_ns: int) -> MetricRows:
    """One row per point and slot of its interval, with that slot's share of its requests."""
    end = delta.end_ns
    known = delta.start_ns > 0
    start = np.where(known, np.maximum(delta.start_ns, end - MAX_SLOTS_PER_POINT * slot_ns), end)
    first = np.where(known & (start < end), start // slot_ns, end // slot_ns)
    last = np.maximum(first, np.where(end % slot_ns == 0, end // slot_ns - 1, end // slot_ns))
    last = np.where(known & (start < end), last, first)
    pieces = (last - first + 1).astype(np.intp)
    point = np.repeat(np.arange(len(delta)), pieces)
    offset = np.arange(point.shape[0]) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    slot = first[point] + offset
    lo = np.maximum(start[point], slot * slot_ns)
    hi = np.minimum(end[point], (slot + 1) * slot_ns)
    length = (end - start)[point]
    share = np.where(length > 0, (hi - lo) / np.maximum(length, 1), 1.0)
    requests = delta.count[point] * share
    hist = delta.hist[point] * share[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_ms = np.where(delta.count > 0, busy_ms(delta.hist) / delta.count, 0.0)
    n = point.shape[0]
    zeros64 = np.zeros(n, dtype=np.uint64)
    batch = SpanBatch(
        subject_id=delta.subject_id[point], end_ns=np.minimum(end[point], (slot + 1) * slot_ns - 1),
        duration_ms=mean_ms[point], error=delta.error[point], client_error=delta.client_error[point],
        kind=delta.kind[point], service_id=delta.service_id()[point], resource_id=np.full(n, -1, np.int32),
        start_ns=lo, http_status=delta.http_status[point], grpc_status=delta.grpc_status[point],
        resend_count=np.zeros(n, np.int16), weight=requests.astype(np.float32),
        sampling_attribute=np.zeros(n, bool), trace_key=zeros64, span_id=zeros64, parent_span_id=zeros64,
        spans_total=n, aggregated=True)
    if n:
        batch.max_end_ns = int(batch.end_ns.max())
        batch.median_end_ns = int(np.median(batch.end_ns))
    return MetricRows(batch, hist, requests)
