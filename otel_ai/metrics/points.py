"""The normalized shapes metrics decode into: what every later stage reads.

RED histograms become `RedPoints`, columns with one row per data point (a stream's
count and latency bins over an interval); resource gauges become `UtilizationSample`s.
Like decode's SpanBatch, nothing after decode reads protobuf.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from otel_ai.histogram import BINS


@dataclass(frozen=True, slots=True)
class MetricResource:
    """The pod, process or host that sent a point (one per OTLP Resource)."""

    service: str
    instance: str  # as resources.instance_of: k8s.pod.name, service.instance.id, host.name, container.id
    service_id: int  # SubjectTable.services, -1 once that table is full


@dataclass(frozen=True, slots=True)
class Exemplar:
    """A request the histogram point holds up as an example, with its trace."""

    row: int  # the RedPoints row it belongs to
    time_ns: int
    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    value_ms: float


def _empty(dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


@dataclass(slots=True)
class RedPoints:
    """One row per histogram data point of a request-duration metric.

    Each stream has one status (its attributes carry it), so a row's `count` requests
    are all server errors (`error`), all 4xx (`client_error`) or all fine. Counts are
    float64: cumulative values run past float32, and exponential buckets re-bin into
    fractions. Decode gives cumulative rows as they came (`cumulative`); the delta
    converter turns them into the requests of the interval (start_ns, end_ns].
    """

    stream: np.ndarray = field(default_factory=lambda: _empty(np.uint64))  # identity incl. start time
    subject_id: np.ndarray = field(default_factory=lambda: _empty(np.int32))  # route or dependency
    kind: np.ndarray = field(default_factory=lambda: _empty(np.int8))  # 2 SERVER (route), 3 CLIENT (dependency)
    resource: np.ndarray = field(default_factory=lambda: _empty(np.int32))  # index into `resources`
    start_ns: np.ndarray = field(default_factory=lambda: _empty(np.int64))  # 0: unknown
    end_ns: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    count: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    hist: np.ndarray = field(default_factory=lambda: np.zeros((0, BINS)))  # float64 counts per latency bin
    error: np.ndarray = field(default_factory=lambda: _empty(bool))  # 5xx, server gRPC codes, error.type
    client_error: np.ndarray = field(default_factory=lambda: _empty(bool))  # 4xx, client gRPC codes
    cumulative: np.ndarray = field(default_factory=lambda: _empty(bool))
    http_status: np.ndarray = field(default_factory=lambda: _empty(np.int16))  # 0: none (as SpanBatch)
    grpc_status: np.ndarray = field(default_factory=lambda: _empty(np.int8))  # -1: none
    resources: list[MetricResource] = field(default_factory=list)
    exemplars: list[Exemplar] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.count.shape[0])

    def take(self, rows: np.ndarray, exemplars: list[Exemplar] | None = None) -> RedPoints:
        """The given rows (an index array) with exemplars re-pointed at them; `exemplars`
        replaces this batch's own when given."""
        rows = np.asarray(rows, dtype=np.intp)
        new_row = np.full(len(self), -1, dtype=np.intp)
        new_row[rows] = np.arange(rows.shape[0])
        kept = [Exemplar(int(new_row[e.row]), e.time_ns, e.trace_id, e.span_id, e.value_ms)
                for e in (self.exemplars if exemplars is None else exemplars) if new_row[e.row] >= 0]
        return RedPoints(self.stream[rows], self.subject_id[rows], self.kind[rows], self.resource[rows],
                         self.start_ns[rows], self.end_ns[rows], self.count[rows], self.hist[rows],
                         self.error[rows], self.client_error[rows], self.cumulative[rows], self.http_status[rows],
                         self.grpc_status[rows], self.resources, kept)

    def service_id(self) -> np.ndarray:
        """Per row, the dense id of its resource's service (SpanBatch.service_id)."""
        ids = np.array([r.service_id for r in self.resources] or [-1], dtype=np.int32)
        return ids[self.resource] if len(self) else np.zeros(0, np.int32)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One saturation series: a resource (CPU or memory) of one pod, container or host,
    as one source metric reports it (sources are not mixed: their baselines differ)."""

    service: str
    instance: str
    container: str  # "" for pod-, process- or host-level sources
    resource: str  # semconv.CPU or semconv.MEMORY
    source: str  # the metric name


@dataclass(frozen=True, slots=True)
class UtilizationSample:
    series: SeriesKey
    time_ns: int
    measure: str  # semconv.RATIO, USAGE or LIMIT
    value: float  # a ratio, or cores / bytes
    subject_id: int = -1  # the instance subject (SubjectTable.instance) of the pod, process or host


@dataclass(slots=True)
class MetricBatch:
    """What one ExportMetricsServiceRequest decodes into."""

    red: RedPoints
    utilization: list[UtilizationSample]
    data_points: int = 0  # every data point in the request
    rejected: int = 0  # refused one by one (partial success), with the reasons
    reject_message: str = ""
    ignored: int = 0  # accepted, but of metrics otel-ai does not read
