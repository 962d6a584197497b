"""The native OTLP reader against the Python reference: identical batches, captures,
error messages and interning state, on named edge cases, generator traffic of every
scenario, cache overflow, and a few thousand hypothesis-generated requests.
The >= 100k run and the sanitizer run are scripts/decode_fuzz.py and scripts/decode_asan.sh."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_ai.decode import GENERATED_ATTRIBUTE, Decoder, native
from otel_ai.decode.reference import weight_of
from otel_ai.subjects import SubjectTable
from otel_ai.testing.decoders import assert_same, twin_decoders
from otel_ai.testing.otlp_fuzz import (
    BOUNDS, NOW, byte_mutations, field_mutations, ld, mutated, request_bodies, tag, trace_states, varint,
)
from otel_ai.testing.scenarios import SCENARIOS, scenario

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native reader not built: {native.UNAVAILABLE}")


def _span(*fields: bytes, kind: int = 2, trace_id: bytes = bytes(range(16))) -> bytes:
    return ld(2, tag(6, 0) + varint(kind) + tag(7, 1) + (NOW - 10**9).to_bytes(8, "little")
              + tag(8, 1) + NOW.to_bytes(8, "little") + ld(1, trace_id) + ld(2, bytes(8)) + b"".join(fields))


def _attr(key: bytes, value: bytes) -> bytes:
    return ld(9, ld(1, key) + ld(2, value))


def _request(*spans: bytes, resource: bytes = ld(1, ld(1, b"service.name") + ld(2, ld(1, b"api")))) -> bytes:
    return ld(1, ld(1, resource) + ld(2, b"".join(spans)))


ROUTE = _attr(b"http.route", ld(1, b"/x"))
EDGE_CASES = {
    "plain": _request(_span(ROUTE)),
    "route given twice, last wins": _request(_span(ROUTE, _attr(b"http.route", ld(1, b"/y")))),
    "entry with an unknown field is left out": _request(_span(ROUTE, ld(9, ld(1, b"http.route") + ld(2, ld(1, b"/z"))
                                                                        + tag(3, 0) + b"\x01"))),
    "entry value with the wrong wire type": _request(_span(ld(9, ld(1, b"http.route") + tag(2, 0) + b"\x01"))),
    "entry without a key": _request(_span(ld(9, ld(2, ld(1, b"/x"))))),
    "value given twice merges": _request(_span(ld(9, ld(1, b"http.response.status_code") + ld(2, ld(1, b"503"))
                                                  + ld(2, tag(3, 0) + varint(404))), ROUTE)),
    "status given twice merges": _request(_span(ROUTE, ld(15, tag(3, 0) + b"\x02"), ld(15, ld(2, b"boom")))),
    "resource given twice merges": ld(1, ld(1, ld(1, ld(1, b"service.name") + ld(2, ld(1, b"a"))))
                                      + ld(1, ld(1, ld(1, b"k8s.pod.name") + ld(2, ld(1, b"p1"))))
                                      + ld(2, _span(ROUTE))),
    "kind as a 10-byte varint": _request(ld(2, tag(6, 0) + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x7f")),
    "kind with the wrong wire type": _request(ld(2, ld(6, b"\x02"))),
    "11-byte varint": _request(ld(2, tag(6, 0) + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")),
    "group (handed to the reference)": _request(_span(ROUTE, tag(20, 3) + tag(20, 4))),
    "bad UTF-8 in a span name": _request(_span(ld(5, b"\xff"))),
    "bad UTF-8 in an unknown field": _request(_span(ROUTE, ld(20, b"\xff"))),
    "surrogate in a value": _request(_span(_attr(b"http.route", ld(1, b"\xed\xa0\x80")))),
    "truncated": _request(_span(ROUTE))[:-3],
    "field number 0": b"\x00\x00",
    "own output is dropped": _request(_span(ROUTE), resource=ld(1, ld(1, GENERATED_ATTRIBUTE.encode())
                                                                  + ld(2, tag(2, 0) + b"\x01"))),
    "times past int64": _request(ld(2, tag(6, 0) + b"\x02" + tag(7, 1) + b"\x01" * 8 + tag(8, 1) + b"\xff" * 8)),
    "client without a dependency name": _request(_span(_attr(b"rpc.service", ld(1, b"")), kind=3)),
    "client named by db system and namespace": _request(_span(_attr(b"db.system", ld(1, b"postgresql")),
                                                              _attr(b"db.name", ld(1, b"orders")), kind=3)),
    "exception events and a sampled trace id": _request(ld(2, tag(6, 0) + b"\x03" + tag(7, 1) + (NOW - 10**9).to_bytes(8, "little")
                                                          + tag(8, 1) + NOW.to_bytes(8, "little") + ld(1, bytes(16))
                                                          + _attr(b"peer.service", ld(1, b"db"))
                                                          + _attr(b"tenant.id", ld(1, b"acme"))
                                                          + _attr(b"retries", tag(3, 0) + b"\x02")
                                                          + ld(11, ld(2, b"exception") + _attr(b"exception.type", ld(1, b"E"))
                                                               + _attr(b"exception.message", ld(1, b"m" * 300)))
                                                          + ld(15, tag(3, 0) + b"\x02"))),
}


def _ids(span: int, parent: int = 0, trace_id: bytes = bytes(range(16))) -> bytes:
    return ld(1, trace_id) + ld(2, span.to_bytes(8, "little")) + (ld(4, parent.to_bytes(8, "little")) if parent else b"")


DB_CALL = _attr(b"peer.service", ld(1, b"db"))
# A route whose calls are made inside two nested INTERNAL spans (a saga, a method), one
# call inside an UNSPECIFIED span, and an INTERNAL span under otel-ai's own resource.
UNDER_INTERNAL = (_request(_span(ROUTE, _ids(1)), _span(_ids(2, 1), kind=1), _span(_ids(3, 2), kind=1),
                           _span(DB_CALL, _ids(4, 3), kind=3), _span(_ids(5, 1), kind=0),
                           _span(DB_CALL, _ids(6, 5), kind=3), _span(DB_CALL, _ids(7, 99), kind=3))
                  + ld(1, ld(1, ld(1, ld(1, GENERATED_ATTRIBUTE.encode()) + ld(2, tag(2, 0) + b"\x01")))
                       + ld(2, _span(_ids(99, 1), kind=1))))
EDGE_CASES["calls under INTERNAL spans"] = UNDER_INTERNAL


def _tangled_internal_spans(seed: int) -> bytes:
    """INTERNAL spans in a small id space: chains deeper than the re-parenting follows,
    cycles, an id given twice with two parents, two traces sharing span ids."""
    rng = random.Random(seed)
    spans = [_span(ROUTE, _ids(1))]
    for span_id in range(2, 40):
        trace = bytes(range(16)) if rng.random() < 0.8 else bytes(range(1, 17))
        parent = rng.choice([0, 1, rng.randrange(2, 40), span_id + 1, span_id - 1])
        kind = rng.choice([0, 1, 1, 3])  # UNSPECIFIED and INTERNAL are not rows; CLIENT is
        fields = (DB_CALL,) if kind == 3 else ()
        spans.append(_span(*fields, _ids(rng.randrange(2, 24), parent, trace), kind=kind, trace_id=trace))
    return _request(*spans)


@pytest.mark.parametrize("seed", range(40))
def test_tangled_internal_parents_resolve_alike(seed: int) -> None:
    assert_same(_tangled_internal_spans(seed), BOUNDS)


@pytest.mark.parametrize("reference", [False, True])
def test_calls_made_inside_internal_spans_get_the_route_as_parent(reference: bool) -> None:
    batch = Decoder(SubjectTable(), reference=reference).decode(UNDER_INTERNAL, BOUNDS)
    parents = dict(zip(batch.span_id.tolist(), batch.parent_span_id.tolist()))
    # 4 and 6 are called from the route (span 1); 7's parent is otel-ai's own: not looked through
    assert parents == {1: 0, 4: 1, 6: 1, 7: 99}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_decode_alike(name: str) -> None:
    assert_same(EDGE_CASES[name], BOUNDS)


def test_unusual_requests_go_to_the_reference_and_errors_match() -> None:
    decoder = Decoder(SubjectTable(), reference=False)
    with pytest.raises(Exception) as native_error:
        decoder.decode(EDGE_CASES["bad UTF-8 in a span name"], BOUNDS)
    with pytest.raises(Exception) as reference_error:
        Decoder(SubjectTable(), reference=True).decode(EDGE_CASES["bad UTF-8 in a span name"], BOUNDS)
    assert str(native_error.value) == str(reference_error.value) != ""
    fallbacks = decoder.protobuf.fallbacks
    decoder.decode(EDGE_CASES["group (handed to the reference)"], BOUNDS)
    assert decoder.protobuf.fallbacks == fallbacks + 1
    decoder.decode(EDGE_CASES["plain"], BOUNDS)
    assert decoder.protobuf.fallbacks == fallbacks + 1


def test_generator_traffic_of_every_scenario_decodes_alike() -> None:
    decoders = twin_decoders()  # shared across requests: the native caches get hits
    for name in SCENARIOS + ("benign",):
        for body in scenario(name, seed=9, warmup_s=5, rate_scale=0.2).serialized_batches(20, 2.0):
            assert_same(body, None, decoders)
    native_decoder, _ = decoders
    assert native_decoder.protobuf.fallbacks == 0
    assert len(native_decoder.subjects) > 20


def test_cache_overflow_and_subject_caps_decode_alike() -> None:
    """More distinct names than the C caches hold, past the subject caps: same ids, same
    overflow counts, same refused suspect keys."""
    decoders = twin_decoders(max_routes_per_service=300, max_subjects=2000)
    rnd = random.Random(3)
    for batch in range(24):
        spans = []
        for i in range(2000):
            n = batch * 2000 + i
            trace_id = rnd.randbytes(16)  # 1 in 32 is sampled for suspects
            spans.append(_span(_attr(b"http.route", ld(1, f"/r/{n % 45_000}".encode())),
                               _attr(b"request.id", ld(1, str(n).encode())),
                               _attr(f"key{n % 700}".encode(), ld(1, b"v")), ld(11, b""), trace_id=trace_id))
            spans.append(_span(_attr(b"peer.service", ld(1, f"dep{rnd.randrange(3000)}".encode())), kind=3,
                               trace_id=trace_id))
        body = ld(1, ld(1, ld(1, ld(1, b"service.name") + ld(2, ld(1, f"svc{batch % 3}".encode()))))
                  + ld(2, b"".join(spans)))
        assert_same(body, BOUNDS, decoders)
    native_decoder, _ = decoders
    assert native_decoder.subjects.overflowed > 0
    assert native_decoder.naming.pairs.high_cardinality  # refused keys are cached in C too


def test_resource_cache_overflow_decodes_alike() -> None:
    decoders = twin_decoders()
    for batch in range(6):
        blocks = []
        for i in range(2500):
            resource = (ld(1, ld(1, b"service.name") + ld(2, ld(1, b"api")))
                        + ld(1, ld(1, b"k8s.pod.name") + ld(2, ld(1, f"pod-{batch}-{i}".encode()))))
            blocks.append(ld(1, ld(1, resource) + ld(2, _span(ROUTE))))
        assert_same(b"".join(blocks), BOUNDS, decoders)
    assert len(decoders[0].resources) == 15_001


FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(body=st.one_of(request_bodies, mutated(request_bodies)), seed=st.integers(0, 2**32 - 1))
def test_generated_requests_decode_alike(body: bytes, seed: int) -> None:
    """Each example and 9 mutations of it: ~3,000 requests per run."""
    rnd = random.Random(seed)
    decoders = twin_decoders()
    for case in [body] + field_mutations(body, rnd, 4) + byte_mutations(body, rnd, 5):
        assert_same(case, BOUNDS, decoders)


@settings(max_examples=300, deadline=None, database=None)
@given(state=st.one_of(trace_states, st.text(alphabet=" \t\n\x1c=,;:thoabcdef0123456789", max_size=24)))
def test_sampling_weight_is_the_same_in_c_and_python(state: str) -> None:
    found = native._otlp.tracestate_weight(state)
    if found is None:
        assert not state.isascii()  # handed to the reference reader
    else:
        assert found == weight_of(state)


@pytest.mark.parametrize("state, weight", [("ot=th:8", 2.0), ("ot=th:c;rv:1234", 4.0), ("dd=1,ot=th:0", 1.0),
                                           ("ot=th:", 1.0), ("ot=th:G", 1.0), ("ot=rv:ab", 1.0), ("", 1.0),
                                           (" ot=th:c ", 4.0), ("ot", 1.0), ("ot=th:fd70a4", 100.00000000000001)])
def test_sampling_weight_follows_the_threshold(state: str, weight: float) -> None:
    assert weight_of(state) == pytest.approx(weight)
    assert native._otlp.tracestate_weight(state) == weight_of(state)


def test_weight_column_comes_from_tracestate() -> None:
    body = _request(_span(ROUTE, ld(3, b"ot=th:c")), _span(ROUTE))
    batch = Decoder(SubjectTable(), reference=False).decode(body, BOUNDS)
    assert batch.weight.tolist() == [4.0, 1.0]
    assert_same(body, BOUNDS)


def _double(value: float) -> bytes:
    import struct

    return tag(4, 1) + struct.pack("<d", value)


@pytest.mark.parametrize("attributes, weight, marked", [
    ((_attr(b"SampleRate", tag(3, 0) + varint(20)),), 20.0, True),
    ((_attr(b"SampleRate", _double(12.5)),), 12.5, True),
    ((_attr(b"SampleRate", ld(1, b"40")),), 40.0, True),  # digits in a string, as int_of reads them
    ((_attr(b"SampleRate", _double(0.5)),), 1.0, True),  # not a rate
    ((_attr(b"SampleRate", _double(float("inf"))),), 1.0, True),
    ((_attr(b"SampleRate", _double(1e300)),), 1.0, True),  # beyond 2^56: not a rate
    ((_attr(b"sampling.priority", tag(3, 0) + varint(1)), _attr(b"SampleRate", tag(3, 0) + varint(20))), 1.0, True),
    ((_attr(b"sampling.priority", tag(3, 0) + varint(0)), _attr(b"SampleRate", tag(3, 0) + varint(20))), 20.0, True),
    ((_attr(b"tailsampling.policy", ld(1, b"errors")),), 1.0, True),
    ((ld(3, b"ot=th:c"), _attr(b"SampleRate", tag(3, 0) + varint(20))), 4.0, True),  # the OTel threshold wins
    ((), 1.0, False),
])
def test_weight_and_sampling_attribute_from_span_attributes(attributes: tuple, weight: float, marked: bool) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_ai.receiver.otlp_json import to_otlp_json

    body = _request(_span(ROUTE, *attributes))
    json_body = to_otlp_json(ExportTraceServiceRequest.FromString(body)).encode()
    for decoder in twin_decoders():
        for batch in (decoder.decode(body, BOUNDS), decoder.decode_json(json_body, BOUNDS)):
            assert batch.weight.tolist() == [weight] and batch.sampling_attribute.tolist() == [marked]
    assert_same(body, BOUNDS)
    assert_same(json_body, BOUNDS, json=True)


def test_decoders_are_garbage_collected() -> None:
    """The C reader's callbacks are bound methods of its owner: a cycle the collector
    must be able to break, or every pipeline would leak its caches."""
    import gc

    gc.collect()
    before = sum(isinstance(o, native._otlp.Reader) for o in gc.get_objects())
    for _ in range(20):
        Decoder(SubjectTable()).decode(EDGE_CASES["plain"], BOUNDS)
    gc.collect()
    assert sum(isinstance(o, native._otlp.Reader) for o in gc.get_objects()) == before


def _ended_at(end_ns: int) -> bytes:
    return ld(2, tag(6, 0) + varint(2) + tag(7, 1) + (end_ns - 10**6).to_bytes(8, "little")
              + tag(8, 1) + end_ns.to_bytes(8, "little") + ld(1, bytes(range(16))) + ld(2, bytes(8)) + ROUTE)


@pytest.mark.parametrize("seed", range(40))
def test_the_median_end_is_computed_alike(seed: int) -> None:
    """The C reader computes max and median end itself: odd and even counts, runs of equal
    ends, sorted and reversed orders, one span."""
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 4, 5, 8, 33, 512, rng.randint(1, 700)])
    spread = rng.choice([1, 3, 10**3, 10**9])
    ends = [NOW - rng.randrange(spread) for _ in range(n)]
    if seed % 3 == 1:
        ends.sort()
    elif seed % 3 == 2:
        ends.sort(reverse=True)
    body = _request(*(_ended_at(e) for e in ends))
    assert_same(body)
    batch = Decoder(SubjectTable()).decode(body, None)
    assert batch.median_end_ns == int(np.median(np.array(ends, dtype=np.int64)))
    assert batch.max_end_ns == max(ends)
