"""The one interface between the OTLP receivers and the pipeline behind them.

Like the Collector's consumer.Traces and consumer.Metrics: receivers only parse the
transport, hand the request over, and translate the outcome into OTLP status codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class InvalidRequest(Exception):
    """The body is not a decodable export request (INVALID_ARGUMENT / 400)."""


class Saturated(Exception):
    """The pipeline's bounded queue is full: the sender must retry later.

    Receivers answer UNAVAILABLE with RetryInfo (gRPC) or 503 with Retry-After (HTTP),
    which the Collector's exporters treat as retryable.
    """

    def __init__(self, retry_after_s: float = 1.0, message: str = "pipeline saturated"):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class ExportResult:
    """What partial_success reports: spans refused one by one, and why."""

    rejected_spans: int = 0
    error_message: str = ""
    spans: int = 0  # spans in the request, accepted or not (for progress reports)


# Encodings of an ExportTraceServiceRequest body.
PROTOBUF = "protobuf"
JSON = "json"  # OTLP/JSON (hex ids)


class TraceConsumer(Protocol):
    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        """Accept a serialized ExportTraceServiceRequest, or raise InvalidRequest or
        Saturated. Must not block for long.

        Bytes rather than a parsed message: the pipeline decodes them straight into its
        columnar batch, without building protobuf or JSON objects per span."""
        ...


@dataclass(slots=True)
class MetricsExportResult:
    """What partial_success reports for metrics: data points refused one by one, and why."""

    rejected_data_points: int = 0
    error_message: str = ""
    data_points: int = 0  # data points in the request, accepted or not


class MetricsConsumer(Protocol):
    def consume_metrics(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> MetricsExportResult:
        """Accept a serialized ExportMetricsServiceRequest (protobuf or OTLP/JSON), or raise
        InvalidRequest or Saturated. Must not block for long.

        A separate method name from TraceConsumer.consume, so that one pipeline can be
        both consumers."""
        ...
