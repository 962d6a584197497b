"""A TraceConsumer that records what a receiver hands over, for receiver tests."""
from __future__ import annotations

import threading

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.receiver.consumer import JSON, PROTOBUF, ExportResult, InvalidRequest, Saturated
from otel_ai.receiver.otlp_json import parse_otlp_json


class RecordingConsumer:
    """Parses and keeps each request; can be told to be saturated or to refuse spans."""

    def __init__(self) -> None:
        self.requests: list[tuple[ExportTraceServiceRequest, str]] = []
        self.saturated_for_s: float | None = None
        self.rejected_spans = 0
        self.lock = threading.Lock()

    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        try:
            request = parse_otlp_json(body) if encoding == JSON else ExportTraceServiceRequest.FromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise InvalidRequest(str(exc)) from None
        if self.saturated_for_s is not None:
            raise Saturated(self.saturated_for_s)
        with self.lock:
            self.requests.append((request, transport))
        return ExportResult(self.rejected_spans, "spans too old" if self.rejected_spans else "")
