"""OTLP/JSON -> SpanRows (placeholder: through json_format and the reference reader)."""
from __future__ import annotations

from otel_ai.decode.contract import MalformedRequest
from otel_ai.decode.reference import ReferenceReader


class JsonReader:
    name = "json"

    def __init__(self, reference: ReferenceReader):
        self.reference = reference

    def read(self, body: bytes, bounds):
        from otel_ai.receiver.otlp_json import parse_otlp_json

        try:
            request = parse_otlp_json(body)
        except ValueError as exc:
            raise MalformedRequest(str(exc)) from None
        return self.reference.read(request.SerializeToString(), bounds)
