"""The OTLP/JSON readers against the json_format path: identical batches, captures and
error messages; canonical documents never fall back.

Both fast readers are checked: the native one (the C transcoder, then the native
protobuf reader) and the direct Python reader it falls back to (which serves alone when
the extension is not built)."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.decode import native
from otel_ai.decode.otlp_json import JsonReader
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.testing.decoders import assert_same, transcoding_differences, twin_decoders
from otel_ai.testing.otlp_fuzz import BOUNDS, byte_mutations, json_documents
from otel_ai.testing.scenarios import SCENARIOS, scenario

READERS = [pytest.param("native", marks=pytest.mark.skipif(not native.available(), reason=native.UNAVAILABLE)),
           "python"]
needs_native = pytest.mark.skipif(not native.available(), reason=f"the extension is not built: {native.UNAVAILABLE}")


def json_twins(reader: str):
    """(fast, reference) decoders whose fast JSON reader is the one named."""
    fast, reference = twin_decoders()
    if reader == "python" and not isinstance(fast.json, JsonReader):
        fast.json = fast.json.python
    assert type(fast.json).__module__.endswith("native" if reader == "native" else "otlp_json")
    return fast, reference


@pytest.mark.parametrize("reader", READERS)
def test_generator_traffic_as_json_decodes_alike_without_fallback(reader: str) -> None:
    decoders = json_twins(reader)
    for name in SCENARIOS:
        for body in scenario(name, seed=6, warmup_s=5, rate_scale=0.2).serialized_batches(10, 2.0):
            document = to_otlp_json(ExportTraceServiceRequest.FromString(body)).encode()
            assert_same(document, None, decoders, json=True)
            if reader == "native":
                assert not transcoding_differences(document)
    assert decoders[0].json.fallbacks == 0


@pytest.mark.parametrize("reader", READERS)
def test_non_canonical_json_goes_to_json_format_and_errors_match(reader: str) -> None:
    decoders = json_twins(reader)
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


_SPAN = ('{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","name":"GET /x","kind":2,'
         '"startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000250000000","status":{"code":2},'
         '"attributes":[{"key":"http.route","value":{"stringValue":"/x"}},ATTRS]}')
_TAKEN = {  # canonical documents at the edges of the shape: the transcoder takes them
    "escapes and non-ASCII": '{"key":"k\\u00e9\\ud83d\\ude00","value":{"stringValue":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000é"}}',
    "empty values": '{"key":"","value":{"stringValue":""}},{"key":"e","value":{}},{"key":"n"},{}',
    "integers at their bounds": '{"key":"a","value":{"intValue":-9223372036854775808}},'
                                '{"key":"b","value":{"intValue":"9223372036854775807"}},'
                                '{"key":"http.response.status_code","value":{"intValue":"-0"}}',
    "doubles": '{"key":"SampleRate","value":{"doubleValue":4}},{"key":"d","value":{"doubleValue":-0}},'
               '{"key":"f","value":{"doubleValue":-0.0}},{"key":"g","value":{"doubleValue":1.5e-320}},'
               '{"key":"h","value":{"doubleValue":1E+2}}',
    "booleans": '{"key":"t","value":{"boolValue":true}},{"key":"f","value":{"boolValue":false}}',
    "nested arrays and maps": '{"key":"a","value":{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":"x",'
                              '"value":{"arrayValue":{}}}]}},{"intValue":1}]}}}',
    "whitespace": ' { "key" : "w" ,\n\t"value" :\r{ "stringValue" : "x" } } ',
}
_LEFT = {  # documents the transcoder leaves to the Python readers
    "a duplicate name": '{"key":"a","key":"b"}',
    "an escaped name": '{"k\\u0065y":"a"}',
    "a lone surrogate": '{"key":"\\ud800"}',
    "a reversed surrogate pair": '{"key":"\\udc00\\ud800"}',
    "a raw control character": '{"key":"a\tb"}',
    "two oneof members": '{"key":"a","value":{"stringValue":"x","intValue":1}}',
    "bytes": '{"key":"a","value":{"bytesValue":"AAE="}}',
    "a quoted double": '{"key":"a","value":{"doubleValue":"1.5"}}',
    "an integer past int64": '{"key":"a","value":{"intValue":9223372036854775808}}',
    "a float integer": '{"key":"a","value":{"intValue":1.0}}',
    "a leading zero": '{"key":"a","value":{"intValue":01}}',
    "a long digit string": '{"key":"a","value":{"intValue":"000000000000000000001"}}',
    "null": '{"key":"a","value":null}',
    "an infinite double": '{"key":"a","value":{"doubleValue":1e400}}',
    "a big integer double": '{"key":"a","value":{"doubleValue":12345678901234567}}',
    "nested too deep": '{"key":"a","value":' + '{"arrayValue":{"values":[' * 9 + "{}" + "]}}" * 9 + "}",
    "an unknown member": '{"key":"a","future":1}',
}


def _document(attrs: str, span: str = _SPAN) -> bytes:
    return ('{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},'
            '"scopeSpans":[{"scope":{"name":"s"},"spans":[' + span.replace("ATTRS", attrs) + ']}]}]}').encode()


@needs_native
def test_check_and_startup_name_the_native_json_path() -> None:
    from otel_ai.decode import describe

    assert describe().endswith("OTLP/JSON: native (C transcoder, then the native reader)")
    assert twin_decoders()[0].json.name == "native"


@needs_native
@pytest.mark.parametrize("case", sorted(_TAKEN))
def test_the_transcoder_takes_canonical_edges_and_writes_json_formats_message(case: str) -> None:
    decoders = json_twins("native")
    document = _document(_TAKEN[case])
    assert native.transcode_json(document) is not None
    assert not transcoding_differences(document)
    assert_same(document, None, decoders, json=True)
    assert decoders[0].json.fallbacks == 0


@needs_native
@pytest.mark.parametrize("case", sorted(_LEFT))
def test_the_transcoder_leaves_the_rest_to_python_with_the_same_answer(case: str) -> None:
    decoders = json_twins("native")
    document = _document(_LEFT[case])
    assert native.transcode_json(document) is None
    assert_same(document, None, decoders, json=True)
    assert decoders[0].json.fallbacks == 1


@needs_native
def test_span_level_edges() -> None:
    """Ids in either case or empty, negative and unknown enums, uint64 times as numbers."""
    decoders = json_twins("native")
    spans = [_SPAN.replace('"kind":2', '"kind":-7'), _SPAN.replace('"code":2', '"code":2147483647'),
             _SPAN.replace('"spanId":"eee19b7ec3c1b174"', '"spanId":""'),
             _SPAN.replace('"startTimeUnixNano":1700000000000000000', '"startTimeUnixNano":18446744073709551615'),
             _SPAN.replace('"name":"GET /x"', '"name":"GET /x","flags":257,"droppedLinksCount":3,'
                           '"links":[{"traceId":"00ff","spanId":"","flags":4294967295}],'
                           '"events":[{"timeUnixNano":"5","name":"exception","attributes":[{"key":"exception.type",'
                           '"value":{"stringValue":"E"}}]}]')]
    for span in spans:
        document = _document('{"key":"x"}', span)
        assert native.transcode_json(document) is not None, span
        assert not transcoding_differences(document)
        assert_same(document, None, decoders, json=True)
    assert native.transcode_json(_document('{"key":"x"}', _SPAN.replace('"kind":2', '"kind":2147483648'))) is None
    assert native.transcode_json(_document('{"key":"x"}', _SPAN.replace('"kind":2', '"kind":"2"'))) is None
    assert native.transcode_json(_document('{"key":"x"}', _SPAN.replace('5B8E', '5B8'))) is None


@pytest.mark.parametrize("reader", READERS)
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(document=json_documents(), garbage=st.binary(max_size=64), seed=st.integers(0, 2**32 - 1))
def test_generated_json_decodes_alike(reader: str, document: bytes, garbage: bytes, seed: int) -> None:
    decoders = json_twins(reader)
    cases = [document, document[: len(document) // 2] + garbage] + byte_mutations(document, random.Random(seed), 2)
    for case in cases:
        assert_same(case, BOUNDS, decoders, json=True)
        if reader == "native":
            assert not transcoding_differences(case)


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
