"""Differential checking of the decoders: the native reader against the Python reference.

`decode_both` runs one body through two fresh-state decoders (or given ones) and
`assert_same` compares everything a later stage could see: every column, the counts,
the rejection message, the captures, and the subject and resource tables.
`transcoding_differences` checks the OTLP/JSON transcoder below the batch: the message it
writes is the one json_format parses, in every field.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from otel_ai.decode import Decoder, MalformedRequest, SpanBatch, TimeBounds
from otel_ai.subjects import SubjectTable

_ARRAYS = [f.name for f in fields(SpanBatch) if f.name not in
           ("spans_total", "rejected", "reject_message", "ignored", "own", "captures", "max_end_ns", "median_end_ns",
            "aggregated", "derived", "internal", "capture_source")]
_SCALARS = ["spans_total", "rejected", "reject_message", "ignored", "own", "max_end_ns", "median_end_ns", "aggregated"]


def twin_decoders(max_routes_per_service: int = 2000, max_subjects: int = 20000) -> tuple[Decoder, Decoder]:
    """(fast, reference) decoders over separate but equal subject tables: the native and
    direct JSON readers against the upb view and json_format paths."""
    return (Decoder(SubjectTable(max_routes_per_service, max_subjects), reference=False),
            Decoder(SubjectTable(max_routes_per_service, max_subjects), reference=True))


def outcome(decoder: Decoder, body: bytes, bounds: TimeBounds | None, json: bool = False):
    """The batch, or the error message of a malformed request."""
    try:
        return (decoder.decode_json if json else decoder.decode)(body, bounds)
    except MalformedRequest as exc:
        return f"MalformedRequest: {exc}"


def differences(a, b, decoder_a: Decoder | None = None, decoder_b: Decoder | None = None) -> list[str]:
    """What differs between two outcomes (and, if given, the decoders' interning state)."""
    if isinstance(a, str) or isinstance(b, str):
        return [] if a == b else [f"outcome: {a!r} != {b!r}"]
    found = []
    for name in _ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            found.append(f"column {name}: {x!r} != {y!r}")
    for name in _SCALARS:
        if getattr(a, name) != getattr(b, name):
            found.append(f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}")
    if a.captures != b.captures:
        found.append(f"captures: {a.captures!r} != {b.captures!r}")
    internal = [None if x.internal is None else [getattr(x.internal, k).tolist() for k in
                                                 ("trace_key", "span_id", "parent_span_id")] for x in (a, b)]
    if internal[0] != internal[1]:
        found.append(f"internal spans: {internal[0]!r} != {internal[1]!r}")
    if decoder_a is not None and decoder_b is not None:
        sa, sb = decoder_a.subjects, decoder_b.subjects
        if sa.subjects != sb.subjects or sa.services != sb.services or sa.overflowed != sb.overflowed:
            found.append(f"subject tables: {sa.subjects!r} / {sa.overflowed} != {sb.subjects!r} / {sb.overflowed}")
        if decoder_a.resources.resources != decoder_b.resources.resources:
            found.append(f"resource tables: {decoder_a.resources.resources!r} != {decoder_b.resources.resources!r}")
    return found


def assert_same(body: bytes, bounds: TimeBounds | None = None, decoders: tuple[Decoder, Decoder] | None = None,
                json: bool = False) -> None:
    native, reference = decoders or twin_decoders()
    found = differences(outcome(native, body, bounds, json), outcome(reference, body, bounds, json), native, reference)
    assert not found, "native and reference decoders differ on " + repr(body[:200]) + ":\n" + "\n".join(found)


def transcoding_differences(document: bytes) -> list[str]:
    """What differs between the native transcoder's protobuf of an OTLP/JSON document and
    json_format's message of it (nothing when the transcoder leaves it to Python)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_ai.decode import native
    from otel_ai.receiver.otlp_json import parse_otlp_json

    transcoded = native.transcode_json(document)
    if transcoded is None:
        return []
    try:
        expected = parse_otlp_json(document)
    except ValueError as exc:
        return [f"json_format rejects what the transcoder took: {exc}"]
    found = ExportTraceServiceRequest.FromString(transcoded)
    return [] if found == expected else [f"transcoded {found!r} != json_format's {expected!r}"]
