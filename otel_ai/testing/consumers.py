"""A trace and metrics consumer that records what a receiver hands over, for receiver tests."""
from __future__ import annotations

import threading

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.receiver.consumer import JSON, PROTOBUF, ExportResult, InvalidRequest, MetricsExportResult, Saturated
from otel_ai.receiver.otlp_json import parse_otlp_json


class RecordingConsumer:
    """Parses and keeps each request; can be told to be saturated or to refuse spans
    (or data points)."""

    def __init__(self) -> None:
        self.requests: list[tuple[ExportTraceServiceRequest, str]] = []
        self.metric_requests: list[tuple[ExportMetricsServiceRequest, str]] = []
        self.saturated_for_s: float | None = None
        self.rejected_spans = 0
        self.rejected_data_points = 0
        self.lock = threading.Lock()

    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        self._record(self.requests, ExportTraceServiceRequest, _protobuf(body, encoding, ExportTraceServiceRequest),
                     transport)
        return ExportResult(self.rejected_spans, "spans too old" if self.rejected_spans else "")

    def consume_metrics(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> MetricsExportResult:
        self._record(self.metric_requests, ExportMetricsServiceRequest,
                     _protobuf(body, encoding, ExportMetricsServiceRequest), transport)
        return MetricsExportResult(self.rejected_data_points,
                                   "data points without a time" if self.rejected_data_points else "")

    def _record(self, into: list, message: type[Message], body: bytes, transport: str) -> None:
        try:
            request = message.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise InvalidRequest(str(exc)) from None
        if self.saturated_for_s is not None:
            raise Saturated(self.saturated_for_s)
        with self.lock:
            into.append((request, transport))


def _protobuf(body: bytes, encoding: str, message: type[Message]) -> bytes:
    if encoding != JSON:
        return body
    try:
        return parse_otlp_json(body, message).SerializeToString()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
