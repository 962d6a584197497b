"""The direct OTLP/JSON reader against the json_format path: identical batches, captures
and error messages; canonical documents never fall back."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.testing.decoders import assert_same, twin_decoders
from otel_ai.testing.otlp_fuzz import BOUNDS, json_documents
from otel_ai.testing.scenarios import SCENARIOS, scenario


def test_generator_traffic_as_json_decodes_alike_without_fallback() -> None:
    decoders = twin_decoders()
    for name in SCENARIOS:
        for body in scenario(name, seed=6, warmup_s=5, rate_scale=0.2).serialized_batches(10, 2.0):
            assert_same(to_otlp_json(ExportTraceServiceRequest.FromString(body)).encode(), None, decoders, json=True)
    assert decoders[0].json.fallbacks == 0


def test_non_canonical_json_goes_to_json_format_and_errors_match() -> None:
    decoders = twin_decoders()
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "GET /x",
            "kind": 2, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000250000000",
            "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}]}
    variants = [
        {"resource_spans": [{"scope_spans": [{"spans": [span]}]}]},  # snake_case: json_format accepts it
        {"resourceSpans": [{"scopeSpans": [{"spans": [dict(span, kind="SPAN_KIND_SERVER")]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": [dict(span, traceId="zz")]}]}]},  # an error
        {"resourceSpans": [{"scopeSpans": [{"spans": [dict(span, startTimeUnixNano=" 1")]}]}]},
        {"resourceSpans": 5},
    ]
    for document in variants:
        assert_same(json.dumps(document).encode(), None, decoders, json=True)
    for body in (b"", b"[]", b"\xff\xfe", b"[" * 100_000, b'{"resourceSpans": [}'):
        assert_same(body, None, decoders, json=True)
    assert decoders[0].json.fallbacks == len(variants) + 5


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(document=json_documents(), garbage=st.binary(max_size=64))
def test_generated_json_decodes_alike(document: bytes, garbage: bytes) -> None:
    decoders = twin_decoders()
    assert_same(document, BOUNDS, decoders, json=True)
    assert_same(document[: len(document) // 2] + garbage, BOUNDS, decoders, json=True)


def test_deep_traffic_with_internal_spans_decodes_alike_and_calls_get_their_route() -> None:
    """booking-service makes its calls inside an INTERNAL span (BookingSaga.run): in every
    reader those CLIENT rows get the route's SERVER span as parent, and the INTERNAL spans
    ride along on the batch for calls that came in another request."""
    from otel_ai.testing.scenarios import deep_scenario

    decoders = twin_decoders()
    body = next(iter(deep_scenario("deep_benign", seed=3, rate_scale=0.3, duration_s=5).serialized_batches(5, 5.0)))
    document = to_otlp_json(ExportTraceServiceRequest.FromString(body)).encode()
    assert_same(document, None, decoders, json=True)
    for batch in (decoders[0].decode_json(document, None), decoders[0].decode(body, None)):
        booking = decoders[0].subjects.services.index("booking-service")
        calls = (batch.kind == 3) & (batch.service_id == booking)
        parents = set(batch.parent_span_id[calls].tolist())
        assert calls.sum() > 20 and len(batch.internal) > 5
        assert not parents & set(batch.internal.span_id.tolist())  # none is left under an INTERNAL span here
        assert len(parents & set(batch.span_id[batch.kind == 2].tolist())) >= 0.8 * len(parents)
