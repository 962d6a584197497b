"""The metrics side of the pipeline: an OTLP metrics request in, RED rows into the same
windows as spans, utilization into the saturation series.

Receiver threads call `decode` under the pipeline's decode lock (the subject table is
shared with the span decoder): parse and decode. The worker thread then calls `apply`:
cumulative -> delta, which subjects' counts now come from metrics (coverage), their rows
spread over the event-time slots, exemplars and utilization samples kept. Cumulative
streams move on only there: a request refused for a full queue leaves them as they
were, so the Collector's retry counts its requests once.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_ai.decode import SPAN_KIND_SERVER, SpanBatch, TimeBounds
from otel_ai.metrics import semconv
from otel_ai.metrics.coverage import MetricCoverage
from otel_ai.metrics.decode import MetricsDecoder
from otel_ai.metrics.exemplars import ExemplarStore
from otel_ai.metrics.points import MetricBatch, RedPoints, UtilizationSample
from otel_ai.metrics.rows import slot_rows
from otel_ai.metrics.saturation import SaturationStore
from otel_ai.metrics.temporality import DeltaConverter
from otel_ai.proto.otel_ai.v1.metrics_view_pb2 import MetricsRequestView
from otel_ai.receiver.consumer import JSON, InvalidRequest
from otel_ai.receiver.otlp_json import parse_otlp_json
from otel_ai.resources import ResourceTable
from otel_ai.subjects import SubjectTable
from otel_ai.windows import AddResult, WindowStore

# The watermark waits for metric points: their interval ends when they are exported, so
# slots stay open one export interval longer (at most this much; the SDKs' default
# interval is 60 s), for as long as metrics keep coming.
MAX_METRIC_LATENESS_NS = 120 * 10**9
LATENESS_MEMORY_NS = 300 * 10**9
SPAN_ROUTES_EVERY = 16


@dataclass(slots=True)
class MetricWork:
    """What decode hands to the worker: the RED points (cumulative or delta) and
    utilization samples of one request."""

    points: RedPoints
    utilization: list[UtilizationSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points) + len(self.utilization)


class MetricsStage:
    def __init__(self, subjects: SubjectTable, max_streams: int = 100_000) -> None:
        self.subjects = subjects
        self.decoder = MetricsDecoder(subjects)
        self.converter = DeltaConverter(max_streams=max_streams)
        self.coverage = MetricCoverage()
        self.exemplars = ExemplarStore()
        self.saturation = SaturationStore()
        self._intervals: deque[tuple[int, int]] = deque(maxlen=64)  # (end ns, typical export interval ns)
        self._span_batches = 0

    # ---- receiving side (caller holds the decode lock)
    def decode(self, body: bytes, encoding: str, bounds: TimeBounds | None) -> tuple[MetricBatch, MetricWork]:
        """The decoded request (for counts and partial success) and the work for the worker."""
        if encoding == JSON:
            try:
                body = parse_otlp_json(body, ExportMetricsServiceRequest).SerializeToString()
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        try:
            view = MetricsRequestView.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise InvalidRequest(str(exc) or "malformed protobuf") from None
        batch = self.decoder.decode(view, bounds)
        return batch, MetricWork(batch.red, batch.utilization)

    # ---- the worker
    def apply(self, work: MetricWork, windows: WindowStore) -> tuple[AddResult, RedPoints]:
        """What the windows took, and the request's RED deltas."""
        delta = self.converter.to_delta(work.points)
        self.saturation.add(work.utilization)
        if len(delta) == 0:
            return AddResult(0, 0, 0), delta
        self._note_interval(delta)
        self._note_metric_routes(delta)
        self.exemplars.add(delta)
        counted = self.coverage.admit(delta, windows)
        rows = slot_rows(delta if counted.all() else delta.take(np.flatnonzero(counted)), windows.slot_ns)
        return windows.add(rows.batch, hist=rows.hist), delta

    def _note_metric_routes(self, delta: RedPoints) -> None:
        """Which routes each instance serves, from its server histograms."""
        server = np.flatnonzero(delta.kind == semconv.SERVER)
        if server.shape[0] == 0:
            return
        pairs, requests = _sum_by(delta.resource[server], delta.subject_id[server], delta.count[server])
        for resource, sids, counts in pairs_by_first(pairs, requests):
            found = delta.resources[resource]
            self.saturation.note_routes(found.service, found.instance or found.service, sids, counts)

    def note_span_routes(self, batch: SpanBatch, resources: ResourceTable) -> None:
        """Which routes each instance serves, from its SERVER spans: called for every
        SPAN_ROUTES_EVERY-th batch (the routes a pod serves change slowly)."""
        self._span_batches += 1
        if self._span_batches % SPAN_ROUTES_EVERY:
            return
        server = np.flatnonzero(batch.kind == SPAN_KIND_SERVER)
        if server.shape[0] == 0:
            return
        pairs, requests = _sum_by(batch.resource_id[server], batch.subject_id[server], batch.weight[server])
        for resource, sids, counts in pairs_by_first(pairs, requests):
            info = resources[resource]
            self.saturation.note_routes(info.service, info.instance or info.service, sids, counts)

    def _note_interval(self, delta: RedPoints) -> None:
        known = delta.start_ns > 0
        if known.any():
            interval = int(np.median((delta.end_ns - delta.start_ns)[known]))
            self._intervals.append((int(delta.end_ns.max()), interval))

    def lateness_ns(self, now_ns: int) -> int:
        """How long slots must stay open for metric points: the longest typical export
        interval of the last five minutes of event time, 0 when no metrics came."""
        recent = [interval for end, interval in self._intervals if end >= now_ns - LATENESS_MEMORY_NS]
        return min(max(recent, default=0), MAX_METRIC_LATENESS_NS)



def _sum_by(first: np.ndarray, second: np.ndarray, amounts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (first, second) pairs, sorted, and the amounts summed per pair."""
    keys = (first.astype(np.int64) << 32) | second.astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=amounts)


def pairs_by_first(pairs: np.ndarray, amounts: np.ndarray):
    """(first, seconds, amounts) per distinct first value of _sum_by's sorted pairs."""
    firsts = pairs >> 32
    starts = np.flatnonzero(np.r_[True, firsts[1:] != firsts[:-1]])
    for begin, end in zip(starts.tolist(), [*starts[1:].tolist(), pairs.shape[0]]):
        yield int(firsts[begin]), pairs[begin:end] & 0xFFFFFFFF, amounts[begin:end]
