"""Property-based fuzzing of both OTLP decoders: the protobuf path into
Pipeline.consume and the OTLP/JSON parser of the HTTP receiver.

Whatever arrives, the only failure a decoder may report is the documented one
(InvalidRequest, ValueError); anything else would reach the receivers as an
INTERNAL / 500 answer.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_ai.config import load_settings
from otel_ai.decode import Decoder
from otel_ai.pipeline import Pipeline
from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import TraceRequestView
from otel_ai.receiver.consumer import ExportResult, InvalidRequest
from otel_ai.receiver.otlp_json import parse_otlp_json, to_otlp_json
from otel_ai.store import IncidentStore
from otel_ai.subjects import SubjectTable
from otel_ai.testing import otlp_fuzz as fuzz

# A fixed wall clock: consume() and feed() of the same body see the same time bounds.
NOW = time.time_ns()
HOUR = 3600 * 10**9
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SETTINGS = load_settings(env={})
# The fuzz never starts the worker: make sure the queue cannot fill up within a test.
SETTINGS.receiver.queue_batches = 10**6
SETTINGS.receiver.queue_spans = 10**9


@pytest.fixture(scope="module")
def store() -> Iterator[IncidentStore]:
    with tempfile.TemporaryDirectory(prefix="otel-ai-fuzz-") as tmp:
        s = IncidentStore(Path(tmp) / "incidents.db")
        yield s
        s.close()


def new_pipeline(store: IncidentStore) -> Pipeline:
    return Pipeline(SETTINGS, store, [], wall_clock_ns=lambda: NOW)


def spans_in(body: bytes) -> int:
    view = TraceRequestView.FromString(body)
    return sum(len(ss.spans) for rs in view.resource_spans for ss in rs.scope_spans)


def sample(pipeline: Pipeline, name: str, labels: dict[str, str]) -> float:
    return pipeline.metrics.registry.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------ (a) arbitrary bytes

_framed = fuzz.ld  # a length-delimited field


def _one_valid_body() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="GET /x", kind=2,
        start_time_unix_nano=NOW - 10**6, end_time_unix_nano=NOW)
    span.attributes.add(key="http.route").value.string_value = "/x"
    return request.SerializeToString()


VALID = _one_valid_body()

arbitrary_bodies = st.one_of(
    st.binary(max_size=4096),
    # One level down: random bytes as the content of a ResourceSpans.
    st.binary(max_size=1024).map(lambda b: _framed(1, b)),
    # A valid request with random bytes appended or a random prefix kept.
    st.binary(max_size=256).map(lambda b: VALID + b),
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
)


@FUZZ
@given(body=arbitrary_bodies)
@example(body=b"")
@example(body=VALID)
@example(body=VALID[: len(VALID) // 2])
@example(body=b"\x0a\xff\xff\xff\xff\x0f")  # a length far past the end
@example(body=b"\x0b" * 64)  # start-group tags
@example(body=_framed(1, _framed(2, _framed(2, _framed(5, b"\xff\xfe")))))  # non-UTF-8 name
def test_arbitrary_bytes_give_a_result_or_invalid_request(store: IncidentStore, body: bytes) -> None:
    pipeline = new_pipeline(store)
    try:
        result = pipeline.consume(body, "fuzz")
    except InvalidRequest as exc:
        assert str(exc)
        assert pipeline.queue_depth() == 0
        return
    assert isinstance(result, ExportResult)
    assert 0 <= result.rejected_spans <= spans_in(body)
    assert pipeline.queue_depth() == 1


# ------------------------------------------------------------ (b) structured requests

# Attribute values and keys shared with the differential tests (otel_ai.testing.otlp_fuzz).
int64 = st.integers(-(2**63), INT64_MAX)
text = fuzz.text
attributes = fuzz.attributes
_array = fuzz.array_value


# Well-typed semantic attributes, so that routes, dependencies, errors and captures
# are reached often, not only by luck.
semantic = st.fixed_dictionaries({}, optional={
    "http.route": st.sampled_from(["/users/{id}", "/cart", ""]).map(lambda s: AnyValue(string_value=s)),
    "http.request.method": st.sampled_from(["GET", "POST"]).map(lambda s: AnyValue(string_value=s)),
    "http.response.status_code": st.sampled_from([200, 404, 500, 503]).map(lambda i: AnyValue(int_value=i)),
    "rpc.service": st.sampled_from(["Cart", ""]).map(lambda s: AnyValue(string_value=s)),
    "rpc.grpc.status_code": st.integers(0, 16).map(lambda i: AnyValue(int_value=i)),
    "peer.service": st.sampled_from(["payments", "db"]).map(lambda s: AnyValue(string_value=s)),
    "db.system": st.sampled_from(["postgresql", ""]).map(lambda s: AnyValue(string_value=s)),
    "feature.flag": st.sampled_from(["on", "off"]).map(lambda s: AnyValue(string_value=s)),
}).map(lambda d: list(d.items()))

# Valid-looking times near the fixed NOW, plus zero, tiny, years-off and huge ones
# (huge up to the int64 limit; beyond it has its own test below).
times = st.one_of(
    st.integers(NOW - 60 * 10**9, NOW),
    st.integers(NOW - 2 * HOUR, NOW + 2 * HOUR),
    st.sampled_from([0, 1, 631_152_000 * 10**9, 4_102_444_800 * 10**9, INT64_MAX]),
    st.integers(0, INT64_MAX),
)


@st.composite
def spans(draw: st.DrawFn, huge_times: bool = False) -> Span:
    span = Span(
        trace_id=draw(st.binary(max_size=20)),
        span_id=draw(st.binary(max_size=10)),
        name=draw(st.one_of(text, st.sampled_from(["GET /users/42", "POST /a?b=c", "GET https://x/y/1"]))),
        kind=draw(st.one_of(st.sampled_from([2, 3]), st.integers(0, 5))),
    )
    time_values = st.one_of(times, st.integers(INT64_MAX + 1, UINT64_MAX)) if huge_times else times
    if draw(st.booleans()):
        end = draw(st.one_of(st.integers(NOW - 60 * 10**9, NOW), st.integers(NOW - 2 * HOUR, NOW + 2 * HOUR)))
        span.end_time_unix_nano = end
        span.start_time_unix_nano = max(0, end - draw(st.integers(-10**9, 10**11)))
    else:
        span.start_time_unix_nano = draw(time_values)
        span.end_time_unix_nano = draw(time_values)
    for key, value in draw(semantic) + draw(attributes):
        span.attributes.append(KeyValue(key=key, value=value))
    span.status.code = draw(st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1)))
    if draw(st.booleans()):
        span.status.message = draw(text)
    if draw(st.integers(0, 3)) == 0:
        event = span.events.add(name=draw(st.sampled_from(["exception", "log", ""])))
        for key, value in draw(attributes):
            event.attributes.append(KeyValue(key=key, value=value))
    return span


def requests(huge_times: bool = False) -> st.SearchStrategy[ExportTraceServiceRequest]:
    return fuzz.protobuf_requests(spans(huge_times))


def _plausible(span: Span) -> bool:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    bounds_low = NOW - int(SETTINGS.windows.max_span_age * 10**9)
    bounds_high = NOW + int(SETTINGS.windows.max_clock_skew * 10**9)
    return 0 < start <= end and bounds_low <= end <= bounds_high


def _check_consume_and_feed(store: IncidentStore, request: ExportTraceServiceRequest) -> None:
    body = request.SerializeToString()
    all_spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    pipeline = new_pipeline(store)
    # Built by protobuf itself, so always decodable: no InvalidRequest either.
    result = pipeline.consume(body, "fuzz")
    assert 0 <= result.rejected_spans <= len(all_spans)
    assert bool(result.rejected_spans) == bool(result.error_message)
    if all(_plausible(s) for s in all_spans):
        assert result.rejected_spans == 0
    # Only counted kinds (SERVER, CLIENT) can be refused.
    assert result.rejected_spans <= sum(s.kind in (2, 3) for s in all_spans)
    assert sample(pipeline, "otel_ai_spans_received_total", {"transport": "fuzz"}) == \
        len(all_spans) - result.rejected_spans
    assert sample(pipeline, "otel_ai_spans_rejected_total", {"reason": "invalid_span"}) == result.rejected_spans

    # The synchronous path: same answer, then the windows, detectors and a flush.
    synchronous = new_pipeline(store)
    assert synchronous.feed(body, "fuzz") == result
    synchronous.flush()
    synchronous.flush()
    # Windows count requests: each span's adjusted count (a sampled span stands for more
    # than one), never more than the spans decoded stand for.
    counted = float(synchronous.windows.values["requests"].sum(dtype=np.float64))
    stand_for = float(Decoder(SubjectTable()).decode(body, None).weight.sum(dtype=np.float64))
    assert counted <= stand_for * (1 + 1e-6)
    assert len(synchronous.subjects) <= SETTINGS.limits.max_subjects


@FUZZ
@given(request=requests())
def test_structured_requests_never_crash_consume(store: IncidentStore, request: ExportTraceServiceRequest) -> None:
    _check_consume_and_feed(store, request)


@FUZZ
@given(request=requests(huge_times=True))
@example(request=ExportTraceServiceRequest(resource_spans=[{"scope_spans": [{"spans": [
    {"kind": 2, "start_time_unix_nano": NOW - 1000, "end_time_unix_nano": UINT64_MAX}]}]}]))
def test_structured_requests_with_uint64_times_never_crash(store: IncidentStore,
                                                          request: ExportTraceServiceRequest) -> None:
    _check_consume_and_feed(store, request)


# ------------------------------------------------------------ (c) OTLP/JSON

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=16))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=20,
)
SPAN_FIELDS = ["traceId", "spanId", "parentSpanId", "trace_id", "span_id", "name", "kind", "startTimeUnixNano",
               "endTimeUnixNano", "attributes", "events", "links", "status", "flags", "traceState",
               "droppedAttributesCount"]
hexish = st.one_of(st.text(alphabet="0123456789abcdefABCDEF", max_size=40), st.text(max_size=8))
span_dicts = st.dictionaries(st.sampled_from(SPAN_FIELDS), st.one_of(json_values, hexish), max_size=6)
otlp_shaped = st.builds(
    lambda spans, resource, key: {key: [{"resource": resource, "scopeSpans": [{"spans": spans}]}]},
    st.lists(span_dicts, max_size=3),
    st.one_of(st.dictionaries(st.sampled_from(["attributes", "droppedAttributesCount"]), json_values), json_values),
    st.sampled_from(["resourceSpans", "resource_spans"]),
)
json_documents = st.one_of(json_values, otlp_shaped).map(lambda d: json.dumps(d).encode())
json_bodies = st.one_of(json_documents, st.text(max_size=200).map(str.encode), st.binary(max_size=200))


@FUZZ
@given(body=json_bodies)
@example(body=b"")
@example(body=b"[" * 50_000)
@example(body=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}')
@example(body=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "abc"}]}]}]}')
@example(body=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_NOPE"}]}]}]}')
@example(body=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "-1"}]}]}]}')
@example(body=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1e400}]}]}]}')
def test_json_parser_raises_only_value_error(body: bytes) -> None:
    try:
        request = parse_otlp_json(body)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(request, ExportTraceServiceRequest)
    # Whatever it accepted is a message the protobuf path can carry.
    assert ExportTraceServiceRequest.FromString(request.SerializeToString()) == request


# Round trip: everything OTLP/JSON carries, with well-formed ids.
finite = st.floats(allow_nan=False)
rt_scalars = st.one_of(
    st.text(max_size=12).map(lambda s: AnyValue(string_value=s)),
    int64.map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    finite.map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=6).map(lambda b: AnyValue(bytes_value=b)),
)


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    value = AnyValue()
    for key, item in pairs:
        value.kvlist_value.values.add(key=key).value.CopyFrom(item)
    return value


rt_values = st.one_of(rt_scalars, st.lists(rt_scalars, max_size=3).map(_array),
                      st.lists(st.tuples(st.text(max_size=6), rt_scalars), max_size=3).map(_kvlist))
rt_attributes = st.lists(st.tuples(st.text(max_size=12), rt_values), max_size=4).map(
    lambda pairs: [KeyValue(key=k, value=v) for k, v in pairs])
trace_ids = st.binary(min_size=16, max_size=16)
span_ids = st.binary(min_size=8, max_size=8)
uint64 = st.integers(0, UINT64_MAX)


@st.composite
def rt_spans(draw: st.DrawFn) -> Span:
    span = Span(trace_id=draw(trace_ids), span_id=draw(span_ids),
                parent_span_id=draw(st.one_of(st.just(b""), span_ids)),
                trace_state=draw(st.text(max_size=10)), name=draw(st.text(max_size=16)),
                kind=draw(st.integers(0, 5)), start_time_unix_nano=draw(uint64), end_time_unix_nano=draw(uint64),
                attributes=draw(rt_attributes), dropped_attributes_count=draw(st.integers(0, 2**32 - 1)),
                flags=draw(st.integers(0, 2**32 - 1)))
    span.status.code = draw(st.integers(0, 2))
    span.status.message = draw(st.text(max_size=10))
    for _ in range(draw(st.integers(0, 2))):
        span.events.add(time_unix_nano=draw(uint64), name=draw(st.text(max_size=8)), attributes=draw(rt_attributes))
    for _ in range(draw(st.integers(0, 2))):
        span.links.add(trace_id=draw(trace_ids), span_id=draw(span_ids), attributes=draw(rt_attributes))
    return span


@st.composite
def rt_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = request.resource_spans.add(schema_url=draw(st.text(max_size=8)))
        resource_spans.resource.attributes.extend(draw(rt_attributes))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.text(max_size=8))
            scope_spans.scope.version = draw(st.text(max_size=8))
            scope_spans.spans.extend(draw(st.lists(rt_spans(), max_size=3)))
    return request


@FUZZ
@given(request=rt_requests())
def test_json_round_trip(request: ExportTraceServiceRequest) -> None:
    document = to_otlp_json(request)
    assert "\n" not in document
    decoded = json.loads(document)
    # OTLP/JSON ids are lowercase hex, not the protobuf mapping's base64.
    for rs in decoded.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                assert len(span["traceId"]) == 32 and span["traceId"] == span["traceId"].lower()
                assert len(span["spanId"]) == 16
    assert parse_otlp_json(document.encode()) == request
