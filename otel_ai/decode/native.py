"""The native readers: OTLP protobuf -> SpanBatch columns in C (`_otlp.c`), with the
reference reader behind it for anything unusual; and OTLP/JSON through the same reader,
transcoded to protobuf in C first (`_otlp_json.c`), with the Python JSON readers behind it.

The C reader validates the body as upb would and hands back any request it does not
read itself (malformed, or using protobuf groups): the reference reader then gives the
answer and the error message, so the two never disagree. `fallbacks` counts those.
"""
from __future__ import annotations

import os

import numpy as np

from otel_ai.decode.captures import NOT_SUSPECT_KEYS
from otel_ai.decode.columns import ReadResult, finish, reject_message
from otel_ai.decode.contract import InternalSpans, SpanBatch, TimeBounds
from otel_ai.decode.naming import SubjectNaming
from otel_ai.decode.otlp_json import JsonReader
from otel_ai.decode.reference import ReferenceReader
from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import Resource

try:
    from otel_ai.decode import _otlp, _otlp_json
except ImportError as exc:  # not built (no compiler at install time)
    _otlp = _otlp_json = None
    UNAVAILABLE = str(exc)
else:
    UNAVAILABLE = ""

_WANT_PAIRS, _WANT_EXCEPTIONS = 1, 2
_NO_BOUNDS = TimeBounds(0, 0)


def available() -> bool:
    return _otlp is not None and _otlp_json is not None


class NativeReader:
    name = "native"

    def __init__(self, naming: SubjectNaming, reference: ReferenceReader):
        if not available():
            raise RuntimeError(f"the native OTLP decoder is not built: {UNAVAILABLE}")
        self.naming = naming
        self.reference = reference
        self.fallbacks = 0  # requests handed to the reference reader
        self._reader = _otlp.Reader(naming.resolve, self._resource, naming.pair, NOT_SUSPECT_KEYS,
                                    int.from_bytes(os.urandom(8), "little"))

    def _resource(self, raw: bytes):
        return self.naming.resource(Resource.FromString(raw).attributes)

    def read(self, body: bytes, bounds: TimeBounds | None) -> ReadResult:
        limits = bounds or _NO_BOUNDS
        found = self._reader.read(body, limits.lowest_ns, limits.highest_ns, bounds is not None)
        if found is None:
            self.fallbacks += 1
            return self.reference.read(body, bounds)
        (buffer, offsets, n, blocks, total, own, counted, invalid, out_of_range, max_end, overflow_hits, internal,
         median_end) = found
        self.naming.subjects.overflowed += overflow_hits
        col = {name: np.frombuffer(buffer, dtype, n, offset) for (name, dtype), offset in zip(_otlp.COLUMNS, offsets)}
        batch = SpanBatch(
            subject_id=col["subject_id"], end_ns=col["end_ns"], duration_ms=col["duration_ms"], error=col["error"],
            client_error=col["client_error"], kind=col["kind"], service_id=col["service_id"],
            resource_id=col["resource_id"], start_ns=col["start_ns"], http_status=col["http_status"],
            grpc_status=col["grpc_status"], resend_count=col["resend_count"], weight=col["weight"],
            sampling_attribute=col["sampling_attribute"],
            trace_key=col["trace_key"], span_id=col["span_id"], parent_span_id=col["parent_span_id"],
            spans_total=total, rejected=invalid + out_of_range, reject_message=reject_message(invalid, out_of_range),
            ignored=total - counted)
        span_off, span_len = col["span_off"], col["span_len"]

        def details(indices: np.ndarray, want_pairs: np.ndarray, want_exceptions: np.ndarray) -> list[tuple]:
            flags = want_pairs.astype(np.uint8) * _WANT_PAIRS | want_exceptions.astype(np.uint8) * _WANT_EXCEPTIONS
            return self._reader.details(body, span_off[indices].tobytes(), span_len[indices].tobytes(), flags.tobytes())

        ids = np.frombuffer(internal, dtype="<u8").reshape(-1, 3)
        batch = finish(batch, own, InternalSpans(ids[:, 0], ids[:, 1], ids[:, 2]), reparented=True,
                       ends_ns=(max_end, median_end))
        return ReadResult(batch, col["sample_byte"], col["block"], [info for info, _ in blocks], details)


def find_rows(keys: np.ndarray, queries: np.ndarray, seed: int) -> np.ndarray | None:
    """Per query (uint64), the index of the first equal key or -1, from a hash table in C
    whose multiplier is the odd seed (keys come from untrusted ids); None when the extension
    is not built (the service graph's join then sorts instead)."""
    if _otlp is None:
        return None
    return np.frombuffer(_otlp.find_rows(keys, queries, seed), np.int64)


def transcode_json(body: bytes) -> bytes | None:
    """The ExportTraceServiceRequest protobuf of a canonical OTLP/JSON document; None for
    any other document (the Python readers' to decide)."""
    return _otlp_json.to_protobuf(body)


class NativeJsonReader:
    """OTLP/JSON in the canonical shape, rewritten as protobuf in C and read by the native
    reader; any other document goes to `python` (otlp_json.JsonReader), which decides."""

    name = "native"

    def __init__(self, protobuf: NativeReader, python: JsonReader):
        self.protobuf = protobuf
        self.python = python
        self.fallbacks = 0  # documents handed to the Python JSON reader

    def read(self, body: bytes, bounds: TimeBounds | None) -> ReadResult:
        transcoded = transcode_json(body)
        if transcoded is None:
            self.fallbacks += 1
            return self.python.read(body, bounds)
        return self.protobuf.read(transcoded, bounds)
