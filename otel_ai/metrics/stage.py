"""The metrics side of the pipeline: an OTLP metrics request in, RED rows into the same
windows as spans, utilization into the saturation series.

Receiver threads call `decode` under the pipeline's decode lock (the subject table is
shared with the span decoder): parse, decode, cumulative -> delta. The worker thread
then calls `apply`: which subjects' counts now come from metrics (coverage), their rows
spread over the event-time slots, exemplars and utilization samples kept.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_ai.decode import TimeBounds
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
from otel_ai.subjects import SubjectTable
from otel_ai.windows import AddResult, WindowStore

# The watermark waits for metric points: their interval ends when they are exported, so
# slots stay open one export interval longer (at most this much; the SDKs' default
# interval is 60 s), for as long as metrics keep coming.
MAX_METRIC_LATENESS_NS = 120 * 10**9
LATENESS_MEMORY_NS = 300 * 10**9


@dataclass(slots=True)
class MetricWork:
    """What decode hands to the worker: deltas and utilization samples of one request."""

    delta: RedPoints
    utilization: list[UtilizationSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.delta) + len(self.utilization)


class MetricsStage:
    def __init__(self, subjects: SubjectTable, max_streams: int = 100_000) -> None:
        self.subjects = subjects
        self.decoder = MetricsDecoder(subjects)
        self.converter = DeltaConverter(max_streams=max_streams)
        self.coverage = MetricCoverage()
        self.exemplars = ExemplarStore()
        self.saturation = SaturationStore()
        self._intervals: deque[tuple[int, int]] = deque(maxlen=64)  # (end ns, typical export interval ns)

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
        return batch, MetricWork(self.converter.to_delta(batch.red), batch.utilization)

    # ---- the worker
    def apply(self, work: MetricWork, windows: WindowStore) -> AddResult:
        delta = work.delta
        self.saturation.add(work.utilization)
        if len(delta) == 0:
            return AddResult(0, 0, 0)
        self._note_interval(delta)
        self.exemplars.add(delta)
        counted = self.coverage.admit(delta, windows)
        rows = slot_rows(delta if counted.all() else delta.take(np.flatnonzero(counted)), windows.slot_ns)
        return windows.add(rows.batch, hist=rows.hist)

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

