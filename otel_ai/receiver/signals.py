"""The two OTLP signals otel-ai takes, as both receivers (gRPC and HTTP) see them: what
differs is the consumer method, the gRPC service and HTTP path, the response message and
the counters. Limits, authentication, status codes and back-pressure are shared."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import Counter

from otel_ai.receiver.consumer import ExportResult, MetricsExportResult
from otel_ai.selfmetrics import SelfMetrics


@dataclass(frozen=True, slots=True)
class Signal:
    grpc_service: str
    http_path: str
    request_name: str  # for error messages
    response_type: type[Message]
    partial: Callable[[Any, Any], int]  # fills response.partial_success; returns the refused count
    _requests: str  # SelfMetrics counters: requests by transport and outcome, refusals by reason
    _rejected: str

    def consume_of(self, consumer) -> Callable[..., Any]:
        """The consumer's method for this signal: (body, transport, encoding) -> result."""
        return consumer.consume if self is TRACES else consumer.consume_metrics

    def requests(self, metrics: SelfMetrics) -> Counter:
        return getattr(metrics, self._requests)

    def rejected(self, metrics: SelfMetrics) -> Counter:
        return getattr(metrics, self._rejected)


def _trace_partial(response: ExportTraceServiceResponse, result: ExportResult) -> int:
    if result.rejected_spans > 0:
        response.partial_success.rejected_spans = result.rejected_spans
        response.partial_success.error_message = result.error_message
    return result.rejected_spans


def _metrics_partial(response: ExportMetricsServiceResponse, result: MetricsExportResult) -> int:
    if result.rejected_data_points > 0:
        response.partial_success.rejected_data_points = result.rejected_data_points
        response.partial_success.error_message = result.error_message
    return result.rejected_data_points


TRACES = Signal("opentelemetry.proto.collector.trace.v1.TraceService", "/v1/traces", "ExportTraceServiceRequest",
                ExportTraceServiceResponse, _trace_partial, "requests", "spans_rejected")
METRICS = Signal("opentelemetry.proto.collector.metrics.v1.MetricsService", "/v1/metrics",
                 "ExportMetricsServiceRequest", ExportMetricsServiceResponse, _metrics_partial,
                 "metric_requests", "data_points_rejected")
