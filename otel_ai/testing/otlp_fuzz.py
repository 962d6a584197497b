"""Hypothesis strategies for OTLP request bodies: valid, truncated, mutated, adversarial.

Used by the differential tests (native reader against the Python reference) and by
`scripts/decode_fuzz.py`, which runs the same corpus at scale and under AddressSanitizer.
Bodies are built at the wire level as well as through protobuf, so that what the
protobuf API cannot produce (repeated singular fields, map entries without a key,
known fields with the wrong wire type, groups, bad UTF-8, overlong varints) is covered.
"""
from __future__ import annotations

import random
import time

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_ai.decode import GENERATED_ATTRIBUTE, TimeBounds

NOW = time.time_ns()
HOUR = 3600 * 10**9
BOUNDS = TimeBounds(NOW - 2 * HOUR, NOW + 5 * 60 * 10**9)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

SEMANTIC_KEYS = [
    "http.route", "http.request.method", "http.method", "http.response.status_code", "http.status_code",
    "rpc.service", "rpc.method", "rpc.system", "rpc.grpc.status_code", "peer.service", "server.address",
    "net.peer.name", "db.system", "db.system.name", "db.namespace", "db.name", "http.request.resend_count",
    "service.name", "service.version", "k8s.pod.name", "exception.type", "exception.message", "user.id",
    "tenant.id", "url.path", GENERATED_ATTRIBUTE, "sampling.priority", "SampleRate", "tailsampling.policy",
]


# ------------------------------------------------------------------ wire encoding

def varint(n: int) -> bytes:
    n &= UINT64_MAX
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


# ------------------------------------------------------------------ protobuf-built requests

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
string_values = st.one_of(
    text, st.from_regex(r"\A[0-9]{1,7}\Z"),
    st.sampled_from(["GET", "POST", "", "/users/{id}", "/a/123/b?x=1", "postgresql", "500", "404", "14", "0",
                     "GET /users/42", "https://x/y/1", "é" * 130, "x" * 300]),
)
scalar_values = st.one_of(
    string_values.map(lambda s: AnyValue(string_value=s)),
    st.one_of(st.integers(-(2**63), INT64_MAX), st.integers(-1, 600)).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.floats(allow_nan=True).map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)


def array_value(values: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(values)
    return value


any_values = st.one_of(scalar_values, st.lists(scalar_values, max_size=3).map(array_value))
keys = st.one_of(st.sampled_from(SEMANTIC_KEYS), text)
attributes = st.lists(st.tuples(keys, any_values), max_size=8)
times = st.one_of(
    st.integers(NOW - 60 * 10**9, NOW), st.integers(NOW - 3 * HOUR, NOW + HOUR),
    st.sampled_from([0, 1, INT64_MAX, INT64_MAX + 1, UINT64_MAX]), st.integers(0, UINT64_MAX),
)
trace_states = st.one_of(
    st.just(""),
    st.sampled_from(["ot=th:8", "ot=th:c;rv:1234", "dd=x, ot=th:fffffffffffff", "ot=th:0", "ot=th:", "ot=th:g",
                     "ot=th:123456789abcdef", "ot=rv:ab;th:4", " ot=th:4 ,x=y", "ot=th:A", "ot=p:8", "x=ot=th:4"]),
    st.builds(lambda hexa, extra: f"ot=th:{hexa}{extra}", st.text("0123456789abcdefAF", max_size=16),
              st.sampled_from(["", ";rv:ab", ",vendor=1"])),
    text,
)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))),
        span_id=draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))),
        parent_span_id=draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=9))),
        trace_state=draw(trace_states),
        name=draw(st.one_of(text, st.sampled_from(["GET /users/42", "POST /a?b=c", "GET https://x/y/1", "op"]))),
        kind=draw(st.one_of(st.sampled_from([2, 3]), st.integers(-3, 6), st.integers(-(2**31), 2**31 - 1))),
    )
    if draw(st.booleans()):
        end = draw(st.integers(NOW - 60 * 10**9, NOW))
        span.end_time_unix_nano = end
        span.start_time_unix_nano = max(0, end - draw(st.integers(-10**9, 10**11)))
    else:
        span.start_time_unix_nano = draw(times)
        span.end_time_unix_nano = draw(times)
    for key, value in draw(attributes):
        span.attributes.append(KeyValue(key=key, value=value))
    span.status.code = draw(st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1)))
    if draw(st.booleans()):
        span.status.message = draw(text)
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(name=draw(st.sampled_from(["exception", "log", "", "exceptions"])))
        for key, value in draw(st.lists(st.tuples(st.sampled_from(["exception.type", "exception.message", "x"]),
                                                  any_values), max_size=4)):
            event.attributes.append(KeyValue(key=key, value=value))
    return span


@st.composite
def protobuf_requests(draw: st.DrawFn, span_strategy: st.SearchStrategy[Span] | None = None) -> ExportTraceServiceRequest:
    """Up to 3 resources (a service name, random attributes) of up to 2 scopes of spans."""
    span_strategy = spans() if span_strategy is None else span_strategy
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        resource_spans = request.resource_spans.add()
        service = draw(st.one_of(st.none(), st.sampled_from(["checkout", "cart", ""]), text))
        if service is not None:
            resource_spans.resource.attributes.add(key="service.name").value.string_value = service
        for key, value in draw(attributes):
            resource_spans.resource.attributes.append(KeyValue(key=key, value=value))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(text)
            scope_spans.spans.extend(draw(st.lists(span_strategy, max_size=6)))
    return request


# ------------------------------------------------------------------ wire-level adversarial requests

def _utf8_or_not(draw: st.DrawFn) -> bytes:
    return draw(st.one_of(
        text.map(lambda s: s.encode()), st.sampled_from([k.encode() for k in SEMANTIC_KEYS]),
        st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\x00b", b"\xe2\x82",
                         b"\xf0\x9f\x98\x80", b"caf\xc3\xa9"]),
        st.binary(max_size=6)))


@st.composite
def _unknown_field(draw: st.DrawFn) -> bytes:
    field = draw(st.one_of(st.integers(1, 20), st.sampled_from([2**29 - 1, 2**29, 0])))
    wire_type = draw(st.integers(0, 7))
    if wire_type == 0:
        payload = varint(draw(st.integers(0, UINT64_MAX)))
    elif wire_type == 1:
        payload = draw(st.binary(min_size=8, max_size=8))
    elif wire_type == 2:
        inner = draw(st.binary(max_size=8))
        payload = varint(len(inner)) + inner
    elif wire_type == 5:
        payload = draw(st.binary(min_size=4, max_size=4))
    elif wire_type == 3:
        payload = draw(st.sampled_from([b"", tag(1, 0) + b"\x01"])) + tag(field, 4)
    else:
        payload = draw(st.binary(max_size=3))
    return tag(field, wire_type) + payload


@st.composite
def _any_value_wire(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        choice = draw(st.integers(0, 6))
        if choice == 0:
            parts.append(ld(1, _utf8_or_not(draw)))
        elif choice == 1:
            parts.append(tag(2, 0) + varint(draw(st.integers(0, 3))))
        elif choice == 2:
            parts.append(tag(3, 0) + varint(draw(st.one_of(st.integers(0, 600), st.integers(0, UINT64_MAX)))))
        elif choice == 3:
            parts.append(tag(4, 1) + draw(st.binary(min_size=8, max_size=8)))
        elif choice == 4:
            parts.append(ld(draw(st.sampled_from([5, 6, 7])), draw(st.binary(max_size=6))))
        elif choice == 5:
            parts.append(ld(draw(st.sampled_from([2, 3])), b"\x01"))  # known field, wrong wire type
        else:
            parts.append(draw(_unknown_field()))
    return b"".join(parts)


@st.composite
def _entry_wire(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            parts.append(ld(1, draw(st.one_of(st.sampled_from([k.encode() for k in SEMANTIC_KEYS]),
                                               st.just(b"")))) if draw(st.booleans()) else ld(1, _utf8_or_not(draw)))
        elif choice == 1:
            parts.append(ld(2, draw(_any_value_wire())))
        elif choice == 2:
            parts.append(tag(1, 0) + b"\x05")  # a key with the wrong wire type
        else:
            parts.append(draw(_unknown_field()))
    return b"".join(parts)


@st.composite
def _status_wire(draw: st.DrawFn) -> bytes:
    return b"".join(draw(st.lists(st.one_of(
        st.builds(lambda m: ld(2, m), st.sampled_from([b"boom", b"", b"\xff"])),
        st.builds(lambda c: tag(3, 0) + varint(c), st.one_of(st.integers(0, 3), st.integers(0, UINT64_MAX))),
        _unknown_field()), max_size=3)))


@st.composite
def _event_wire(draw: st.DrawFn) -> bytes:
    parts = [ld(2, draw(st.sampled_from([b"exception", b"log", b"\xff"])))] if draw(st.booleans()) else []
    parts += [ld(3, draw(_entry_wire())) for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        parts.append(tag(1, 1) + draw(st.binary(min_size=8, max_size=8)))
    return b"".join(draw(st.permutations(parts)))


def _fixed64(value: int) -> bytes:
    return value.to_bytes(8, "little")


@st.composite
def _span_wire(draw: st.DrawFn) -> bytes:
    parts = [tag(6, 0) + varint(draw(st.one_of(st.sampled_from([2, 3]), st.integers(0, UINT64_MAX))))]
    end = draw(st.integers(NOW - 60 * 10**9, NOW))
    parts.append(tag(7, 1) + _fixed64(end - draw(st.integers(0, 10**10))))
    parts.append(tag(8, 1) + _fixed64(end))
    for _ in range(draw(st.integers(0, 6))):
        choice = draw(st.integers(0, 11))
        if choice == 0:
            parts.append(ld(1, draw(st.binary(max_size=17))))
        elif choice == 1:
            parts.append(ld(draw(st.sampled_from([2, 4])), draw(st.binary(max_size=9))))
        elif choice == 2:
            parts.append(ld(3, draw(trace_states).encode()))
        elif choice == 3:
            parts.append(ld(5, _utf8_or_not(draw)))
        elif choice in (4, 5, 6):
            parts.append(ld(9, draw(_entry_wire())))
        elif choice == 7:
            parts.append(ld(11, draw(_event_wire())))
        elif choice == 8:
            parts.append(ld(15, draw(_status_wire())))
        elif choice == 9:  # known fields with the wrong wire type
            parts.append(draw(st.sampled_from([ld(6, b"\x02"), tag(7, 0) + b"\x05", tag(1, 0) + b"\x01",
                                               tag(9, 0) + b"\x01", ld(8, b"12345678")])))
        elif choice == 10:
            parts.append(tag(6, 0) + draw(st.sampled_from([b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x7f",
                                                          b"\x83\x80\x80\x80\x80\x80\x80\x80\x80\x00",
                                                          b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"])))
        else:
            parts.append(draw(_unknown_field()))
    return b"".join(draw(st.permutations(parts)))


@st.composite
def _resource_wire(draw: st.DrawFn) -> bytes:
    entries = [ld(1, ld(1, b"service.name") + ld(2, ld(1, draw(st.sampled_from([b"api", b"db", b""])))))]
    if draw(st.integers(0, 5)) == 0:
        entries.append(ld(1, ld(1, GENERATED_ATTRIBUTE.encode()) + ld(2, ld(2, b"\x01"))))
    entries += [ld(1, draw(_entry_wire())) for _ in range(draw(st.integers(0, 3)))]
    return b"".join(entries)


@st.composite
def wire_requests(draw: st.DrawFn) -> bytes:
    blocks = []
    for _ in range(draw(st.integers(0, 3))):
        parts = [ld(1, draw(_resource_wire())) for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2])))]
        for _ in range(draw(st.integers(0, 2))):
            scope = [ld(2, draw(_span_wire())) for _ in range(draw(st.integers(0, 4)))]
            if draw(st.booleans()):
                scope.append(ld(1, ld(1, _utf8_or_not(draw))))
            parts.append(ld(2, b"".join(draw(st.permutations(scope)))))
        if draw(st.integers(0, 4)) == 0:
            parts.append(draw(_unknown_field()))
        blocks.append(ld(1, b"".join(draw(st.permutations(parts)))))
    if draw(st.integers(0, 6)) == 0:
        blocks.append(draw(_unknown_field()))
    return b"".join(blocks)


# ------------------------------------------------------------------ mutations

@st.composite
def mutated(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> bytes:
    body = bytearray(draw(bodies))
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 4))
        if choice == 0 and body:  # truncate
            del body[draw(st.integers(0, len(body) - 1)):]
        elif choice == 1 and body:  # flip a byte
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        elif choice == 2:  # insert bytes
            i = draw(st.integers(0, len(body)))
            body[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif choice == 3 and body:  # delete a run
            i = draw(st.integers(0, len(body) - 1))
            del body[i:i + draw(st.integers(1, 8))]
        else:  # duplicate a run (repeats fields, nests garbage)
            if body:
                i = draw(st.integers(0, len(body) - 1))
                body[i:i] = body[i:i + draw(st.integers(1, 16))]
    return bytes(body)


def byte_mutations(body: bytes, rnd: random.Random, count: int) -> list[bytes]:
    """`count` cheap mutations of one body (truncations, byte flips, inserted, deleted and
    repeated runs), so each generated example also checks its near neighbours."""
    out = []
    for _ in range(count):
        b = bytearray(body)
        for _ in range(rnd.randint(1, 3)):
            choice = rnd.randrange(5)
            i = rnd.randrange(len(b) + 1)
            if choice == 0:
                del b[i:]
            elif choice == 1 and i < len(b):
                b[i] = rnd.randrange(256)
            elif choice == 2:
                b[i:i] = rnd.randbytes(rnd.randint(1, 4))
            elif choice == 3:
                del b[i:i + rnd.randint(1, 8)]
            else:
                b[i:i] = b[i:i + rnd.randint(1, 16)]
        out.append(bytes(b))
    return out


def _parse_fields(data: bytes, depth: int = 0) -> list | None:
    """Wire fields [field, wire type, value], LEN values parsed as messages where they
    parse (a heuristic: strings that happen to parse are treated as messages too)."""
    fields, pos = [], 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, pos = _read_varint(data, pos)
            elif wire_type in (1, 5):
                size = 8 if wire_type == 1 else 4
                value, pos = data[pos:pos + size], pos + size
                if len(value) != size:
                    return None
            elif wire_type == 2:
                size, pos = _read_varint(data, pos)
                value, pos = data[pos:pos + size], pos + size
                if len(value) != size:
                    return None
                if depth < 8 and value:
                    value = _parse_fields(value, depth + 1) or value
            else:
                return None
            if field == 0:
                return None
            fields.append([field, wire_type, value])
    except IndexError:
        return None
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80 or shift > 63:
            return value, pos


def _serialize(fields: list) -> bytes:
    out = []
    for field, wire_type, value in fields:
        if wire_type == 0:
            out.append(tag(field, 0) + varint(value))
        elif wire_type == 2:
            payload = _serialize(value) if isinstance(value, list) else value
            out.append(ld(field, payload))
        else:
            out.append(tag(field, wire_type) + value)
    return b"".join(out)


def _all_lists(fields: list) -> list[list]:
    found = [fields]
    for _, _, value in fields:
        if isinstance(value, list):
            found.extend(_all_lists(value))
    return found


def field_mutations(body: bytes, rnd: random.Random, count: int) -> list[bytes]:
    """`count` mutations that keep the wire format valid: drop, duplicate or swap fields
    at any depth, set varints to edge values, replace short payloads."""
    out = []
    for _ in range(count):
        fields = _parse_fields(body)
        if not fields:
            return out
        for _ in range(rnd.randint(1, 3)):
            target = rnd.choice(_all_lists(fields))
            if not target:
                continue
            i = rnd.randrange(len(target))
            choice = rnd.randrange(6)
            if choice == 0:
                del target[i]
            elif choice == 1:
                target.insert(rnd.randrange(len(target) + 1), list(target[i]))
            elif choice == 2:
                j = rnd.randrange(len(target))
                target[i], target[j] = target[j], target[i]
            elif choice == 3 and target[i][1] == 0:
                target[i][2] = rnd.choice([0, 1, 2, 3, 5, 200, 404, 503, 2**31, 2**63, UINT64_MAX, rnd.getrandbits(64)])
            elif choice == 4 and target[i][1] == 2:
                target[i][2] = rnd.choice([b"", b"\xff", "é".encode(), rnd.randbytes(rnd.randint(1, 9)),
                                           rnd.choice(SEMANTIC_KEYS).encode()])
            else:
                target[i][0] = rnd.choice([1, 2, 3, 5, 6, 9, 11, 15, rnd.randint(1, 40)])
        out.append(_serialize(fields))
    return out


valid_bodies = st.one_of(protobuf_requests().map(lambda r: r.SerializeToString()), wire_requests())
request_bodies = st.one_of(
    valid_bodies,
    mutated(valid_bodies),
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: ld(1, b)),
)


# ------------------------------------------------------------------ OTLP/JSON documents

def _tweak(node, rnd: random.Random, depth: int = 0):
    """Non-canonical but often valid OTLP/JSON: snake_case names, numbers as strings or
    floats, enum names, nulls, unknown fields, wrong types."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            choice = rnd.randrange(40)
            if choice == 0:
                key = "".join("_" + c.lower() if c.isupper() else c for c in key)  # snake_case
            elif choice == 1:
                value = None
            elif choice == 2 and isinstance(value, int) and not isinstance(value, bool):
                value = str(value) if rnd.random() < 0.5 else float(value)
            elif choice == 3 and isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value) if rnd.random() < 0.5 else " " + value
            elif choice == 4 and key == "kind":
                value = rnd.choice(["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "NOPE"])
            elif choice == 5:
                out["someFutureField"] = {"x": 1}
            elif choice == 6 and key in ("traceId", "spanId"):
                value = value.upper() if rnd.random() < 0.5 else value + " "
            elif choice == 7:
                value = rnd.choice([[], {}, "", 0, True, 1.5])
            out[key] = _tweak(value, rnd, depth + 1)
        return out
    if isinstance(node, list):
        return [_tweak(item, rnd, depth + 1) for item in node]
    return node


_EDGE_INTEGERS = [0, 1, -1, 2, 3, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, -(2**63), 2**63,
                  2**64 - 1, 2**64, 10**20, 10**25]
_EDGE_DOUBLES = [0.0, -0.0, 0.5, -1.5, 1e-320, 5e-324, 1.7976931348623157e308, 2.5e-3, 1e16, 1 / 3, 12345678.9]
_EDGE_TEXT = ["", "é", "\U0001f600", "a\"b\\c/", "\n\t\b\f\r", "\x00", "\x1f", "\u2028", "\ud800", "\udc00x",
              "\ufeff", "GET /x", "http.route"]


def _canonical_tweak(node, rnd: random.Random, key: str = "", rarity: int = 20):
    """Edits that mostly keep the canonical shape (the native transcoder's side of the
    line) but probe its edges: integers as numbers or digit strings at their bounds,
    doubles as integers or floats, ids in upper case or odd lengths, strings that need
    escapes, lone surrogates, and the same member twice (a duplicate name)."""
    if isinstance(node, dict):
        if "bytesValue" in node:  # base64: always json_format's to decode
            node = {"stringValue": node["bytesValue"]}
        out = {k: _canonical_tweak(v, rnd, k, rarity) for k, v in node.items()}
        if out and rnd.randrange(15 * rarity) == 0:
            k = rnd.choice(list(out))
            return _Duplicated(list(out.items()) + [(k, out[k])])
        return out
    if isinstance(node, list):
        return [_canonical_tweak(item, rnd, key, rarity) for item in node]
    if rnd.randrange(rarity):  # one value in `rarity` is edited
        return node
    if key in ("traceId", "spanId", "parentSpanId"):
        return rnd.choice([node.upper(), "", node[:-1], node + "0a", "0" * rnd.randrange(40)])
    if key == "doubleValue":
        return rnd.choice(_EDGE_DOUBLES + _EDGE_INTEGERS[:6] + [rnd.uniform(-1e6, 1e6)])
    if isinstance(node, bool):
        return node
    if isinstance(node, int) or isinstance(node, str) and node.isascii() and node.lstrip("-").isdigit():
        value = rnd.choice(_EDGE_INTEGERS + [-value for value in _EDGE_INTEGERS] + [rnd.getrandbits(64)])
        return str(value) if rnd.random() < 0.5 else value
    if isinstance(node, str):
        return rnd.choice(_EDGE_TEXT) + (node if rnd.random() < 0.5 else "")
    return node


class _Duplicated(dict):
    """A JSON object written with one member name twice (json.dumps writes items())."""

    def __init__(self, items):
        super().__init__(items)
        self._items = items

    def items(self):
        return self._items


@st.composite
def json_documents(draw: st.DrawFn) -> bytes:
    """OTLP/JSON as senders write it (from protobuf requests), canonical variants at the
    edges of that shape, and tweaked (mostly non-canonical) variants."""
    import json

    from otel_ai.receiver.otlp_json import to_otlp_json

    text = to_otlp_json(draw(protobuf_requests()))
    how = draw(st.integers(0, 2))
    if how == 0:
        return text.encode()
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    if how == 1:
        return json.dumps(_canonical_tweak(json.loads(text), rnd, rarity=rnd.choice([8, 30, 120])),
                          ensure_ascii=rnd.random() < 0.5,
                          indent=rnd.choice([None, None, 1, "\t"])).encode("utf-8", "surrogatepass")
    return json.dumps(_tweak(json.loads(text), rnd)).encode()


def sanitizer_regressions(body: bytes) -> list[bytes]:
    """Requests built from a real one (body) that once tripped the sanitizer run;
    scripts/decode_fuzz.py checks them before the generated corpus, so every run does."""
    request = ExportTraceServiceRequest.FromString(body)
    first = request.resource_spans[0].SerializeToString()
    rest = b"".join(ld(1, rs.SerializeToString()) for rs in request.resource_spans[1:])
    # A ResourceSpans repeating an empty Resource before the real one (UBSan: a 0-byte
    # memcpy into the merge buffer before it was ever allocated).
    return [ld(1, ld(1, b"") + ld(1, b"") + first) + rest]
