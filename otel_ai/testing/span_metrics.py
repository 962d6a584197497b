"""The request-duration metrics an instrumented app would export for given spans.

Feed it the traffic generator's serialized requests and export every interval: cumulative
explicit-bucket histograms per stream (resource, metric, the attributes semantic
conventions put on metrics), with min and max, as OTel SDK HTTP and gRPC
instrumentations record them. Metrics-only detection can then be judged on the same
deep, bursty traffic as spans, and the two compared subject by subject. Old-convention
spans (`http.method`) give the old millisecond metrics; database calls give none.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import TraceRequestView
from otel_ai.testing.metric_requests import CUMULATIVE, DEFAULT_BOUNDS_S, histogram_point, set_attributes

SERVER, CLIENT = 2, 3
STATUS_ERROR = 2
# Attributes that semantic conventions put on request-duration metrics (never ids or URLs).
METRIC_ATTRIBUTES = (
    "http.route", "http.request.method", "http.method", "http.response.status_code", "http.status_code",
    "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "error.type", "server.address",
    "peer.service", "net.peer.name", "network.protocol.version", "url.scheme",
)
BOUNDS_MS = tuple(b * 1000 for b in DEFAULT_BOUNDS_S)


@dataclass(slots=True)
class _Stream:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DEFAULT_BOUNDS_S) + 1))
    minimum: float = float("inf")
    maximum: float = 0.0


def _metric_of(kind: int, attributes: dict) -> tuple[str, str] | None:
    """(metric name, unit) an instrumentation records this span into, or None."""
    side = "server" if kind == SERVER else "client"
    if "rpc.service" in attributes:
        return f"rpc.{side}.duration", "ms"
    if "http.request.method" in attributes:
        return f"http.{side}.request.duration", "s"
    if "http.method" in attributes:
        return f"http.{side}.duration", "ms"
    return None


def _value(any_value):
    which = any_value.WhichOneof("value")
    return getattr(any_value, which) if which in ("string_value", "int_value", "bool_value", "double_value") else None


class SpanMetrics:
    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns  # every stream's cumulative start
        self._streams: dict[tuple, _Stream] = {}

    def record(self, body: bytes) -> None:
        """Count the SERVER and CLIENT spans of one serialized ExportTraceServiceRequest."""
        for resource_spans in TraceRequestView.FromString(body).resource_spans:
            resource = tuple(sorted((key, _value(value)) for key, value in resource_spans.resource.attributes.items()
                                    if _value(value) is not None))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.kind in (SERVER, CLIENT):
                        self._record(resource, span)

    def _record(self, resource: tuple, span) -> None:
        get = span.attributes.get
        attributes = {key: _value(value) for key in METRIC_ATTRIBUTES if (value := get(key)) is not None}
        found = _metric_of(span.kind, attributes)
        if found is None:
            return
        status = attributes.get("http.response.status_code", attributes.get("http.status_code", 0))
        if span.status.code == STATUS_ERROR and "error.type" not in attributes and not status:
            attributes["error.type"] = "_OTHER"  # what instrumentations record for a failure without a status
        name, unit = found
        key = (resource, name, unit, tuple(sorted(attributes.items())))
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        stream.counts[bisect_left(BOUNDS_MS, duration_ms)] += 1
        stream.minimum = min(stream.minimum, duration_ms)
        stream.maximum = max(stream.maximum, duration_ms)

    def export(self, time_ns: int) -> ExportMetricsServiceRequest:
        """Every stream's cumulative histogram as of `time_ns`, one ResourceMetrics per
        resource and metric."""
        request = ExportMetricsServiceRequest()
        histograms: dict[tuple, object] = {}
        for (resource, name, unit, attributes), stream in self._streams.items():
            data = histograms.get((resource, name))
            if data is None:
                resource_metrics = request.resource_metrics.add()
                set_attributes(resource_metrics.resource.attributes, dict(resource))
                data = resource_metrics.scope_metrics.add().metrics.add(name=name, unit=unit).histogram
                data.aggregation_temporality = CUMULATIVE
                histograms[(resource, name)] = data
            per_unit = 1000.0 if unit == "s" else 1.0
            bounds = DEFAULT_BOUNDS_S if unit == "s" else BOUNDS_MS
            histogram_point(data, dict(attributes), stream.counts, self.start_ns, time_ns, bounds,
                            stream.minimum / per_unit, stream.maximum / per_unit)
        return request
