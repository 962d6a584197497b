"""The reference reader: OTLP protobuf -> SpanBatch in Python, over a parsed view.

It parses bodies into `proto/otel_ai/v1/otlp_view.proto` (upb, in C), a wire-compatible
view of OTLP that declares attribute lists as maps, so finding `http.route` is one hash
lookup; per span it reads kind, times, status and the few attributes that name the
subject. It is the fallback when the native reader is not built, the reader of any
request the native one hands back as unusual, and the oracle of the differential tests.
"""
from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from otel_ai.decode.captures import MAX_EXCEPTIONS, MAX_MESSAGE_CHARS, MAX_VALUE_CHARS, NOT_SUSPECT_KEYS, value_text
from otel_ai.decode.columns import (
    ReadResult, SpanRows, block_of_rows, id64, internal_spans, sample_bytes, to_batch, trace_keys,
)
from otel_ai.decode.contract import (
    SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_UNSPECIFIED, MalformedRequest, TimeBounds,
)
from otel_ai.decode.naming import SubjectNaming, span_subject
from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import TraceRequestView
from otel_ai.sampling import (
    SAMPLE_RATE,
    SAMPLING_PRIORITY,
    TAIL_SAMPLING_POLICY,
    adjusted_count,
    tracestate_adjusted_count,
)

_INT64_MAX = 2**63 - 1
_RESOURCE_CACHE = 10_000


def parse_view(body: bytes) -> TraceRequestView:
    try:
        return TraceRequestView.FromString(body)
    except (DecodeError, RecursionError) as exc:
        raise MalformedRequest(str(exc) or "malformed protobuf") from None


def int_of(value) -> int:
    """An attribute's integer: int_value, else a short string of ASCII digits, else 0."""
    number = value.int_value
    if number:
        return number
    text = value.string_value
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0


def view_text(value) -> str:
    """An attribute's string in the view ("" unless it is a string)."""
    return value.string_value


def weight_of(trace_state: str) -> float:
    """The adjusted count from the tracestate's `ot=th:` alone (1.0 without)."""
    found = tracestate_adjusted_count(trace_state) if trace_state else None
    return 1.0 if found is None else found


def sampling_of(trace_state: str, get, number, real) -> tuple[float, bool]:
    """SpanBatch.weight and .sampling_attribute of one span: the adjusted count
    (sampling.adjusted_count: `th`, else sampling.priority, else SampleRate) and whether a
    sampling attribute is there. `get(key)` is an attribute value or None, `number(value)`
    its integer as int_of reads it, `real(value)` its double (0.0 unless it is one).
    _otlp.c's parse_span is the same rule in C."""
    priority, rate = get(SAMPLING_PRIORITY), get(SAMPLE_RATE)
    if priority is None and rate is None:
        return weight_of(trace_state), get(TAIL_SAMPLING_POLICY) is not None
    rate_value = None if rate is None else (number(rate) or real(rate))
    return adjusted_count(trace_state, rate_value, None if priority is None else number(priority)), True


def real_of(value) -> float:
    """An attribute's double in the view (0.0 unless it is one)."""
    return value.double_value


class ReferenceReader:
    name = "python"

    def __init__(self, naming: SubjectNaming):
        self.naming = naming
        self._resource_cache: dict[bytes, tuple | None] = {}

    def _resource(self, resource):
        key = resource.SerializeToString(deterministic=True)
        found = self._resource_cache.get(key, False)
        if found is False:
            if len(self._resource_cache) >= _RESOURCE_CACHE:
                self._resource_cache.clear()
            found = self._resource_cache[key] = self.naming.resource(resource.attributes)
        return found

    def read(self, body: bytes, bounds: TimeBounds | None) -> ReadResult:
        return self.read_view(parse_view(body), bounds)

    def read_view(self, request: TraceRequestView, bounds: TimeBounds | None) -> ReadResult:
        naming = self.naming
        rows: list[tuple] = []
        spans: list = []
        weights: list[float] = []
        sampling_marks: list[bool] = []
        block_starts: list[int] = []
        blocks: list[tuple] = []
        internal: list[tuple] = []
        total = own = 0
        for resource_spans in request.resource_spans:
            found = self._resource(resource_spans.resource)
            if found is None:
                own += sum(len(scope_spans.spans) for scope_spans in resource_spans.scope_spans)
                continue
            service = found[0].service
            block_starts.append(len(rows))
            blocks.append(found)
            for scope_spans in resource_spans.scope_spans:
                scope_list = scope_spans.spans
                total += len(scope_list)
                for span in scope_list:
                    kind = span.kind
                    if kind != SPAN_KIND_SERVER and kind != SPAN_KIND_CLIENT:
                        if kind == SPAN_KIND_INTERNAL or kind == SPAN_KIND_UNSPECIFIED:
                            internal.append((span.trace_id, span.span_id, span.parent_span_id))
                        continue
                    found = span_subject(kind, span.attributes.get, view_text, int_of, span.name)
                    if found is None:
                        continue
                    rule, a, b, c, http_status, grpc_status, resend = found
                    sid = naming.resolve(rule, service, a, b, c)[0]
                    rows.append((sid, kind, span.start_time_unix_nano, span.end_time_unix_nano,
                                 span.status.code, http_status, grpc_status, resend))
                    spans.append(span)
                    weight, marked = sampling_of(span.trace_state, span.attributes.get, int_of, real_of)
                    weights.append(weight)
                    sampling_marks.append(marked)
        table = _table(rows)
        trace_ids = [span.trace_id for span in spans]
        span_rows = SpanRows(
            sid=table[:, 0], kind=table[:, 1], start=table[:, 2], end=table[:, 3], status=table[:, 4],
            http_status=table[:, 5], grpc_status=table[:, 6], resend=table[:, 7],
            weight=np.array(weights, dtype=np.float32), sampling_attribute=np.array(sampling_marks, dtype=bool),
            trace_key=trace_keys(trace_ids),
            sample_byte=sample_bytes(trace_ids), span_id=id64([span.span_id for span in spans]),
            parent_span_id=id64([span.parent_span_id for span in spans]),
            block_starts=np.asarray(block_starts, dtype=np.int64), blocks=blocks, total=total, own=own,
            internal=internal_spans(internal))
        batch, keep = to_batch(span_rows, bounds)
        kept = np.flatnonzero(keep)

        def details(indices, want_pairs, want_exceptions) -> list[tuple]:
            return [(spans[i].trace_id, spans[i].span_id, self._pairs(spans[i]) if pairs else (),
                     exceptions_of(spans[i]) if exceptions else ())
                    for i, pairs, exceptions in zip(kept[indices].tolist(), want_pairs.tolist(),
                                                    want_exceptions.tolist())]

        return ReadResult(batch, span_rows.sample_byte[keep], block_of_rows(span_rows.block_starts, len(rows))[keep],
                          [info for info, _ in blocks], details)

    def _pairs(self, span) -> tuple:
        intern = self.naming.pairs.intern
        out = []
        for key, value in sorted(span.attributes.items()):
            if key in NOT_SUSPECT_KEYS:
                continue
            text = value_text(value.WhichOneof("value"), value.string_value, value.int_value, value.bool_value)
            if text is None:
                continue
            pair = intern(key, text)
            if pair is not None:
                out.append(pair)
        return tuple(out)


def _table(rows: list[tuple]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 8), dtype=np.int64)
    try:
        return np.array(rows, dtype=np.int64)
    except OverflowError:
        # OTLP times are uint64; values past int64 are garbage: make them invalid (0).
        return np.array([tuple(v if v <= _INT64_MAX else 0 for v in row) for row in rows], dtype=np.int64)


def exceptions_of(span) -> tuple:
    found = []
    for event in span.events:
        if event.name != "exception":
            continue
        attributes = event.attributes
        exc_type = attributes.get("exception.type")
        exc_message = attributes.get("exception.message")
        found.append((
            "" if exc_type is None else exc_type.string_value[:MAX_VALUE_CHARS],
            "" if exc_message is None else exc_message.string_value[:MAX_MESSAGE_CHARS],
        ))
        if len(found) >= MAX_EXCEPTIONS:
            break
    if not found and span.status.message:
        found.append(("", span.status.message[:MAX_MESSAGE_CHARS]))
    return tuple(found)
