"""The native reader: OTLP protobuf -> SpanRows in C (`_otlp.c`), with the reference
reader behind it for anything unusual.

The C reader validates the body as upb would and hands back any request it does not
read itself (malformed, or using protobuf groups): the reference reader then gives the
answer and the error message, so the two never disagree. `fallbacks` counts those.
"""
from __future__ import annotations

import os

import numpy as np

from otel_ai.decode.captures import NOT_SUSPECT_KEYS
from otel_ai.decode.columns import SpanRows
from otel_ai.decode.naming import SubjectNaming
from otel_ai.decode.reference import ReferenceReader
from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import Resource

try:
    from otel_ai.decode import _otlp
except ImportError as exc:  # not built (no compiler at install time)
    _otlp = None
    UNAVAILABLE = str(exc)
else:
    UNAVAILABLE = ""
    ROW_DTYPE = np.dtype({"names": list(_otlp.ROW_FIELDS),
                          "formats": [dtype for _, dtype in _otlp.ROW_FIELDS.values()],
                          "offsets": [offset for offset, _ in _otlp.ROW_FIELDS.values()],
                          "itemsize": _otlp.ROW_SIZE})

_WANT_PAIRS, _WANT_EXCEPTIONS = 1, 2


def available() -> bool:
    return _otlp is not None


class NativeReader:
    name = "native"

    def __init__(self, naming: SubjectNaming, reference: ReferenceReader):
        if _otlp is None:
            raise RuntimeError(f"the native OTLP decoder is not built: {UNAVAILABLE}")
        self.naming = naming
        self.reference = reference
        self.fallbacks = 0  # requests handed to the reference reader
        self._reader = _otlp.Reader(naming.resolve, self._resource, naming.pair, NOT_SUSPECT_KEYS,
                                    int.from_bytes(os.urandom(8), "little"))

    def _resource(self, raw: bytes):
        return self.naming.resource(Resource.FromString(raw).attributes)

    def read(self, body: bytes):
        found = self._reader.read(body)
        if found is None:
            self.fallbacks += 1
            return self.reference.read(body)
        raw_rows, blocks, total, own, overflow_hits = found
        self.naming.subjects.overflowed += overflow_hits
        table = np.frombuffer(raw_rows, dtype=ROW_DTYPE)
        rows = SpanRows(
            sid=table["sid"], kind=table["kind"], start=table["start"], end=table["end"], status=table["status"],
            http_status=table["http_status"], grpc_status=table["grpc_status"], resend=table["resend"],
            weight=table["weight"], trace_key=table["trace_key"], sample_byte=table["sample_byte"],
            span_id=table["span_id"], parent_span_id=table["parent_span_id"],
            block_starts=np.array([start for _, start in blocks], dtype=np.int64),
            blocks=[found for found, _ in blocks], total=total, own=own)

        def details(indices: np.ndarray, want_pairs: np.ndarray, want_exceptions: np.ndarray) -> list[tuple]:
            chosen = table[indices]
            flags = want_pairs.astype(np.uint8) * _WANT_PAIRS | want_exceptions.astype(np.uint8) * _WANT_EXCEPTIONS
            return self._reader.details(body, chosen["span_off"].astype("<u4").tobytes(),
                                        chosen["span_len"].astype("<u4").tobytes(), flags.tobytes())

        return rows, details
