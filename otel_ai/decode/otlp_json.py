"""The OTLP/JSON reader: a JSON ExportTraceServiceRequest -> SpanBatch, without json_format.

Pass 1 walks the document from `json.loads` once, checking that it has the canonical
OTLP/JSON shape (what the Collector's file exporter and OTLP/HTTP senders write:
lowerCamelCase names, hex ids, 64-bit integers as digit strings or numbers, enums as
numbers) and reading what the reference reader would read from the protobuf view. Pass
2 names resources and subjects through the shared rules (naming.py).

Anything else (snake_case names, enum names, unknown fields, nulls, bytes values,
malformed input) goes to the json_format path (receiver/otlp_json.py, then the protobuf
reference reader): it decides, so answers and error messages are the reference's own.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import orjson

from otel_ai.decode.captures import MAX_EXCEPTIONS, MAX_MESSAGE_CHARS, MAX_VALUE_CHARS, NOT_SUSPECT_KEYS, value_text
from otel_ai.decode.columns import (
    ReadResult, SpanRows, block_of_rows, id64, internal_spans, sample_bytes, to_batch, trace_keys,
)
from otel_ai.decode.contract import (
    SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_UNSPECIFIED, MalformedRequest, TimeBounds,
)
from otel_ai.decode.naming import SubjectNaming, span_subject
from otel_ai.decode.reference import ReferenceReader, sampling_of

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_UINT32 = (0, 2**32 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_VALUE_DEPTH = 8
_RESOURCE_CACHE = 10_000

_REQUEST = frozenset({"resourceSpans"})
_RESOURCE_SPANS = frozenset({"resource", "scopeSpans", "schemaUrl"})
_RESOURCE = frozenset({"attributes", "droppedAttributesCount"})
_SCOPE_SPANS = frozenset({"scope", "spans", "schemaUrl"})
_SCOPE = frozenset({"name", "version", "attributes", "droppedAttributesCount"})
_SPAN = frozenset({"traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind", "startTimeUnixNano",
                   "endTimeUnixNano", "attributes", "droppedAttributesCount", "events", "droppedEventsCount",
                   "links", "droppedLinksCount", "status"})
_EVENT = frozenset({"timeUnixNano", "name", "attributes", "droppedAttributesCount"})
_LINK = frozenset({"traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags"})
_STATUS = frozenset({"message", "code"})
_KEY_VALUE = frozenset({"key", "value"})
_NONE = (None, "", 0, False)  # an AnyValue with nothing set: (oneof field, string, int, bool)


class _Unusual(Exception):
    """Not the canonical shape: the json_format path decides."""


# ------------------------------------------------------------------ pass 1: shape checks

def _obj(value, allowed: frozenset) -> dict:
    if type(value) is not dict or not value.keys() <= allowed:
        raise _Unusual
    return value


def _list(value) -> list:
    if type(value) is not list:
        raise _Unusual
    return value


def _str(value) -> str:
    if type(value) is not str:
        raise _Unusual
    return value


def _integer(value, bounds: tuple[int, int], strings: bool = True) -> int:
    """An integer as a JSON number, or (for 64-bit fields) a plain digit string."""
    if type(value) is int:
        number = value
    elif strings and type(value) is str and 0 < len(value) <= 20 and (value.isascii() and value.isdigit() or (
            value[0] == "-" and value[1:].isascii() and value[1:].isdigit())):
        number = int(value)
    else:
        raise _Unusual
    if not bounds[0] <= number <= bounds[1]:
        raise _Unusual
    return number


def _hex_id(value) -> bytes:
    if type(value) is not str:
        raise _Unusual
    found = bytes.fromhex(value)  # ValueError on a non-hex digit: the caller falls back
    if 2 * len(found) != len(value):  # fromhex skips whitespace; json_format does not
        raise _Unusual
    return found


def _any_value(value, depth: int = 0) -> tuple:
    """(oneof field, string, int, bool) as the protobuf view sees it (a double in the bool's
    place, for SampleRate): arrays, maps and bytes are fields the view does not know, so
    they read as nothing set."""
    if type(value) is not dict or len(value) > 1:
        raise _Unusual
    if not value:
        return _NONE
    (name, item), = value.items()
    if name == "stringValue":
        return "string_value", _str(item), 0, False
    if name == "intValue":
        return "int_value", "", _integer(item, _INT64), False
    if name == "boolValue":
        if type(item) is not bool:
            raise _Unusual
        return "bool_value", "", 0, item
    if name == "doubleValue":
        if type(item) not in (int, float) or type(item) is float and not math.isfinite(item) or \
                type(item) is int and abs(item) > 2**53:
            raise _Unusual
        return "double_value", "", 0, float(item)  # the double in the bool's place: nothing else reads it
    if depth >= _MAX_VALUE_DEPTH or type(item) is not dict or not item.keys() <= {"values"}:
        raise _Unusual
    if name == "arrayValue":
        for element in _list(item.get("values", [])):
            _any_value(element, depth + 1)
    elif name == "kvlistValue":
        for entry in _list(item.get("values", [])):
            _key_value(entry, depth + 1)
    else:
        raise _Unusual
    return _NONE


def _key_value(entry, depth: int = 0) -> tuple[str, tuple]:
    _obj(entry, _KEY_VALUE)
    return _str(entry.get("key", "")), (_any_value(entry["value"], depth) if "value" in entry else _NONE)


def _attributes(items) -> dict[str, tuple]:
    """A map, as the view reads repeated KeyValue: the last of equal keys wins."""
    if type(items) is not list:
        raise _Unusual
    out = {}
    for entry in items:
        # The common entries inline: {"key": "...", "value": {"stringValue": "..."}}, and
        # intValue as a digit string (how 64-bit integers are written).
        if type(entry) is dict and len(entry) == 2:
            key, value = entry.get("key"), entry.get("value")
            if type(key) is str and type(value) is dict and len(value) == 1:
                text = value.get("stringValue")
                if type(text) is str:
                    out[key] = ("string_value", text, 0, False)
                    continue
                text = value.get("intValue")
                if type(text) is str and 0 < len(text) < 19 and text.isascii() and text.isdigit():
                    out[key] = ("int_value", "", int(text), False)
                    continue
        key, value = _key_value(entry)
        out[key] = value
    return out


def _check_scope(scope) -> None:
    _obj(scope, _SCOPE)
    _str(scope.get("name", ""))
    _str(scope.get("version", ""))
    _attributes(scope.get("attributes", []))
    _integer(scope.get("droppedAttributesCount", 0), _UINT32, strings=False)


_COUNTS = ("flags", "droppedAttributesCount", "droppedEventsCount", "droppedLinksCount")


def _check_rest_of_span(span: dict) -> None:
    """The fields the reader does not use, checked as json_format would check them
    (senders omit fields at their default, so most are absent)."""
    for name in _COUNTS:
        if name in span:
            _integer(span[name], _UINT32, strings=False)
    if "events" in span:
        for event in _list(span["events"]):
            _obj(event, _EVENT)
            _integer(event.get("timeUnixNano", 0), _UINT64)
            _str(event.get("name", ""))
            _attributes(event.get("attributes", []))
            _integer(event.get("droppedAttributesCount", 0), _UINT32, strings=False)
    if "links" in span:
        for link in _list(span["links"]):
            _obj(link, _LINK)
            _hex_id(link.get("traceId", ""))
            _hex_id(link.get("spanId", ""))
            _str(link.get("traceState", ""))
            _attributes(link.get("attributes", []))
            _integer(link.get("droppedAttributesCount", 0), _UINT32, strings=False)
            _integer(link.get("flags", 0), _UINT32, strings=False)


def _string(value: tuple | None) -> str:
    return "" if value is None else value[1]


def _text(value: tuple) -> str:
    return value[1]


def _real_of(value: tuple) -> float:
    """reference.real_of over the view's AnyValue."""
    return value[3] if value[0] == "double_value" else 0.0


def _int_of(value: tuple) -> int:
    """reference.int_of over the view's AnyValue."""
    if value[2]:
        return value[2]
    text = value[1]
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0


# ------------------------------------------------------------------ the reader

class JsonFormatReader:
    """The reference for OTLP/JSON: json_format into the OTLP message, then the protobuf
    reference reader."""

    name = "json_format"

    def __init__(self, reference: ReferenceReader):
        self.reference = reference

    def read(self, body: bytes, bounds: TimeBounds | None) -> ReadResult:
        from otel_ai.receiver.otlp_json import parse_otlp_json

        try:
            request = parse_otlp_json(body)
        except ValueError as exc:
            raise MalformedRequest(str(exc)) from None
        return self.reference.read(request.SerializeToString(), bounds)


class JsonReader:
    name = "json"

    def __init__(self, naming: SubjectNaming, reference: JsonFormatReader):
        self.naming = naming
        self.reference = reference
        self.fallbacks = 0  # documents handed to the json_format path
        self._resources: dict[tuple, tuple | None] = {}

    def read(self, body: bytes, bounds: TimeBounds | None) -> ReadResult:
        # A document is ~200 acyclic objects per span, freed by reference counting; the
        # cyclic collector would otherwise run generation-2 passes over everything the
        # pipeline holds many times per document.
        collecting = gc.isenabled()
        gc.disable()
        try:
            blocks, rows, spans, totals, internal = self._read_shape(body)
        except (_Unusual, ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            self.fallbacks += 1
            return self.reference.read(body, bounds)
        finally:
            if collecting:
                gc.enable()
        return self._name(blocks, rows, spans, totals, internal, bounds)

    def _read_shape(self, body: bytes):
        """Pass 1: no side effects, so a document that turns out unusual changes nothing."""
        document = _obj(orjson.loads(body), _REQUEST)
        blocks, rows, spans, totals, internal = [], [], [], [], []
        for resource_spans in _list(document.get("resourceSpans", [])):
            _obj(resource_spans, _RESOURCE_SPANS)
            _str(resource_spans.get("schemaUrl", ""))
            resource = _obj(resource_spans.get("resource", {}), _RESOURCE)
            _integer(resource.get("droppedAttributesCount", 0), _UINT32, strings=False)
            blocks.append(_attributes(resource.get("attributes", [])))
            block = len(blocks) - 1
            count = 0
            for scope_spans in _list(resource_spans.get("scopeSpans", [])):
                _obj(scope_spans, _SCOPE_SPANS)
                _str(scope_spans.get("schemaUrl", ""))
                _check_scope(scope_spans.get("scope", {}))
                for span in _list(scope_spans.get("spans", [])):
                    count += 1
                    row = self._span(span, block, internal)
                    if row is not None:
                        rows.append(row)
                        spans.append(span)
            totals.append(count)
        return blocks, rows, spans, totals, internal

    @staticmethod
    def _span(span, block: int, internal: list):
        _obj(span, _SPAN)
        get = span.get
        trace_id = _hex_id(get("traceId", ""))
        span_id = _hex_id(get("spanId", ""))
        parent = _hex_id(get("parentSpanId", "")) if "parentSpanId" in span else b""
        trace_state = _str(get("traceState", ""))
        name = _str(get("name", ""))
        kind = _integer(get("kind", 0), _INT32, strings=False)
        start = _integer(get("startTimeUnixNano", 0), _UINT64)
        end = _integer(get("endTimeUnixNano", 0), _UINT64)
        attrs = _attributes(get("attributes", []))
        code = 0
        if "status" in span:
            status = _obj(span["status"], _STATUS)
            _str(status.get("message", ""))
            code = _integer(status.get("code", 0), _INT32, strings=False)
        _check_rest_of_span(span)
        if kind != SPAN_KIND_SERVER and kind != SPAN_KIND_CLIENT:
            if kind == SPAN_KIND_INTERNAL or kind == SPAN_KIND_UNSPECIFIED:
                internal.append((block, trace_id, span_id, parent))
            return None
        rule = span_subject(kind, attrs.get, _text, _int_of, name)
        if rule is None:
            return None
        weight, marked = sampling_of(trace_state, attrs.get, _int_of, _real_of)
        return (block, kind, start if start < 2**63 else 0, end if end < 2**63 else 0, code, rule, weight,
                trace_id, span_id, parent, attrs, marked)

    def _resource(self, attributes: dict[str, tuple]):
        key = tuple(attributes.items())
        found = self._resources.get(key, False)
        if found is False:
            if len(self._resources) >= _RESOURCE_CACHE:
                self._resources.clear()
            found = self._resources[key] = self.naming.resource_values(attributes)
        return found

    def _name(self, blocks, rows, spans, totals, internal, bounds: TimeBounds | None) -> ReadResult:
        """Pass 2: resources and subjects, in request order, as the reference interns them."""
        naming = self.naming
        kept_rows, kept_spans, block_starts, infos = [], [], [], []
        own_blocks: set[int] = set()
        total = own = 0
        row_at = 0
        for block, attributes in enumerate(blocks):
            found = self._resource(attributes)
            first = row_at
            while row_at < len(rows) and rows[row_at][0] == block:
                row_at += 1
            if found is None:
                own += totals[block]
                own_blocks.add(block)
                continue
            total += totals[block]
            info = found[0]
            block_starts.append(len(kept_rows))
            infos.append(found)
            for row, span in zip(rows[first:row_at], spans[first:row_at]):
                rule, a, b, c = row[5][:4]
                sid = naming.resolve(rule, info.service, a, b, c)[0]
                kept_rows.append((sid,) + row[1:5] + row[5][4:] + row[6:])
                kept_spans.append(span)
        table = np.array([r[:8] for r in kept_rows], dtype=np.int64).reshape(-1, 8)
        trace_ids = [r[9] for r in kept_rows]
        span_rows = SpanRows(
            sid=table[:, 0], kind=table[:, 1], start=table[:, 2], end=table[:, 3], status=table[:, 4],
            http_status=table[:, 5], grpc_status=table[:, 6], resend=table[:, 7],
            weight=np.array([r[8] for r in kept_rows], dtype=np.float32),
            sampling_attribute=np.array([r[13] for r in kept_rows], dtype=bool), trace_key=trace_keys(trace_ids),
            sample_byte=sample_bytes(trace_ids), span_id=id64([r[10] for r in kept_rows]),
            parent_span_id=id64([r[11] for r in kept_rows]),
            block_starts=np.asarray(block_starts, dtype=np.int64), blocks=infos, total=total, own=own,
            internal=internal_spans([ids for block, *ids in internal if block not in own_blocks]))
        batch, keep = to_batch(span_rows, bounds)
        kept = np.flatnonzero(keep)

        def details(indices, want_pairs, want_exceptions) -> list[tuple]:
            return [(kept_rows[i][9], kept_rows[i][10], self._pairs(kept_rows[i][12]) if pairs else (),
                     _exceptions(kept_spans[i]) if exceptions else ())
                    for i, pairs, exceptions in zip(kept[indices].tolist(), want_pairs.tolist(),
                                                    want_exceptions.tolist())]

        return ReadResult(batch, span_rows.sample_byte[keep],
                          block_of_rows(span_rows.block_starts, len(kept_rows))[keep],
                          [info for info, _ in infos], details)

    def _pairs(self, attrs: dict[str, tuple]) -> tuple:
        intern = self.naming.pairs.intern
        out = []
        for key, value in sorted(attrs.items()):
            if key in NOT_SUSPECT_KEYS:
                continue
            text = value_text(*value)
            if text is not None:
                pair = intern(key, text)
                if pair is not None:
                    out.append(pair)
        return tuple(out)


def _exceptions(span: dict) -> tuple:
    """reference.exceptions_of over the span's JSON."""
    found = []
    for event in span.get("events", ()):
        if event.get("name", "") != "exception":
            continue
        attrs = _attributes(event.get("attributes", []))
        found.append((_string(attrs.get("exception.type"))[:MAX_VALUE_CHARS],
                      _string(attrs.get("exception.message"))[:MAX_MESSAGE_CHARS]))
        if len(found) >= MAX_EXCEPTIONS:
            break
    message = span.get("status", {}).get("message", "")
    if not found and message:
        found.append(("", message[:MAX_MESSAGE_CHARS]))
    return tuple(found)
