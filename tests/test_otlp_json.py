from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_ai.receiver.otlp_json import parse_otlp_json, to_otlp_json

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")


def sample_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attr = resource_spans.resource.attributes.add(key="service.name")
    attr.value.string_value = "checkout"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "test"
    span = scope_spans.spans.add(
        trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=PARENT_ID, name="GET /cart",
        kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_250_000_000,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    span.attributes.add(key="http.response.status_code").value.int_value = 503
    span.attributes.add(key="payload").value.bytes_value = b"\x00\xff"
    span.links.add(trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), span_id=bytes.fromhex("b7ad6b7169203331"))
    return request


def test_round_trip_preserves_every_field() -> None:
    request = sample_request()
    assert parse_otlp_json(to_otlp_json(request).encode()) == request


def test_ids_are_lowercase_hex_and_output_is_one_line() -> None:
    text = to_otlp_json(sample_request())
    assert "\n" not in text
    span = json.loads(text)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0]["spanId"] == "b7ad6b7169203331"
    assert span["kind"] == 2  # enums as integers, as OTLP/JSON requires


def test_snake_case_names_string_int64_enum_names_and_unknown_fields() -> None:
    document = {
        "resource_spans": [{
            "scope_spans": [{
                "spans": [{
                    "trace_id": "5B8EFFF798038103D269B633813FC60C",
                    "span_id": "eee19b7ec3c1b174",
                    "name": "GET /cart",
                    "kind": "SPAN_KIND_CLIENT",
                    "start_time_unix_nano": "1700000000000000000",
                    "endTimeUnixNano": 1700000000250000000,
                    "status": {"code": 2},
                    "someFutureField": {"x": 1},
                }],
            }],
            "schemaUrlFromTheFuture": "x",
        }],
    }
    span = parse_otlp_json(json.dumps(document).encode()).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == TRACE_ID
    assert span.span_id == SPAN_ID
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.start_time_unix_nano == 1_700_000_000_000_000_000
    assert span.end_time_unix_nano == 1_700_000_000_250_000_000
    assert span.status.code == Status.STATUS_CODE_ERROR


def test_short_ids_are_kept_as_given() -> None:
    body = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","spanId":""}]}]}]}'
    span = parse_otlp_json(body).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == b"\x01\x02"
    assert span.span_id == b""


@pytest.mark.parametrize("body, fragment", [
    (b'{"resourceSpans": [', "invalid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[]", "JSON object"),
    (b'{"resourceSpans": 5}', "resourceSpans"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', "traceId"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"ab cd"}]}]}]}', "spanId"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":7}]}]}]}', "traceId"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{"spanId":"xyz1"}]}]}]}]}', "spanId"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}', "startTimeUnixNano"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":5}]}]}]}', "name"),
])
def test_malformed_input_raises_value_error_with_a_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_otlp_json(body)


def test_deep_nesting_is_a_value_error_not_a_crash() -> None:
    with pytest.raises(ValueError):
        parse_otlp_json(b"[" * 100_000 + b"]" * 100_000)


def test_response_encoding() -> None:
    assert to_otlp_json(ExportTraceServiceResponse()) == "{}"
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 3
    response.partial_success.error_message = "too old"
    decoded = json.loads(to_otlp_json(response))
    assert decoded == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "too old"}}
