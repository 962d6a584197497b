"""Reading OTLP/HTTP error answers in tests: a google.rpc.Status in the request's encoding."""
from __future__ import annotations

import json

from google.rpc import status_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def decode_status(body: bytes, content_type: str = PROTOBUF) -> status_pb2.Status:
    if content_type == JSON:
        decoded = json.loads(body)
        return status_pb2.Status(code=decoded.get("code", 0), message=decoded.get("message", ""))
    return status_pb2.Status.FromString(body)
