"""The decode stage: OTLP requests (protobuf or JSON) -> SpanBatch.

A reader turns the request into the batch's columns (native C, the direct OTLP/JSON
reader, or the Python references over numpy); the suspect captures are then picked and
built the same way for every reader. `OTEL_AI_DECODER=python` forces the reference
readers (for a suspected bug in a fast one).
"""
from __future__ import annotations

import os

import numpy as np

from otel_ai.decode import native
from otel_ai.decode.capture_budget import CaptureBudget
from otel_ai.decode.captures import ServerPairs, SharedTuples, add_captures
from otel_ai.decode.columns import ReadResult, merge_batches
from otel_ai.decode.contract import SpanBatch, TimeBounds
from otel_ai.decode.naming import SubjectNaming
from otel_ai.decode.otlp_json import JsonFormatReader, JsonReader
from otel_ai.decode.reference import ReferenceReader
from otel_ai.subjects import SubjectTable

DECODER_ENV = "OTEL_AI_DECODER"


def native_wanted() -> bool:
    return native.available() and not _reference_forced()


def _reference_forced() -> bool:
    return os.environ.get(DECODER_ENV, "").strip().lower() in ("python", "reference")


def describe() -> str:
    """Which decoders a new pipeline uses, and why (for `otel-ai check` and startup)."""
    if native_wanted():
        return "native (C extension); OTLP/JSON: native (C transcoder, then the native reader)"
    if native.available():
        return f"python reference ({DECODER_ENV}=python); OTLP/JSON: json_format reference"
    return (f"python reference (the C extension is not built: {native.UNAVAILABLE}); "
            "OTLP/JSON: the direct Python reader")


class Decoder:
    """Turns requests into SpanBatches. Not thread-safe: callers serialise.

    reference=True uses only the reference readers (upb view for protobuf, json_format
    for JSON): the oracle of the differential tests. By default the native readers serve
    (when built; else the upb view and the direct Python JSON reader), unless
    OTEL_AI_DECODER=python.
    """

    def __init__(self, subjects: SubjectTable, reference: bool | None = None):
        if reference is None:
            reference = _reference_forced()
        self.subjects = subjects
        self.naming = SubjectNaming(subjects)
        self.reference = ReferenceReader(self.naming)
        json_format = JsonFormatReader(self.reference)
        if reference:
            self.protobuf, self.json = self.reference, json_format
        elif native.available():
            self.protobuf = native.NativeReader(self.naming, self.reference)
            self.json = native.NativeJsonReader(self.protobuf, JsonReader(self.naming, json_format))
        else:
            self.protobuf, self.json = self.reference, JsonReader(self.naming, json_format)
        self._server_pairs = ServerPairs()
        self._shared = SharedTuples()
        # Per subject: duration above which a request counts as slow enough to capture.
        self.slow_threshold_ms = np.full(0, np.inf)
        # Counters (otel_ai.counters) whose requests the enabled detectors need captured as
        # bad, like errors: one numpy mask per batch each.
        self.capture_marks: tuple = ()
        self.capture_budget = CaptureBudget()

    @property
    def resources(self):
        return self.naming.resources

    def decode(self, body: bytes, bounds: TimeBounds | None, defer_captures: bool = False) -> SpanBatch:
        """An ExportTraceServiceRequest in protobuf; MalformedRequest says what is wrong.
        defer_captures: leave the suspect captures to a later pick_captures() call (the
        pipeline's worker picks many requests at once)."""
        read = self.protobuf.read(body, bounds)
        if defer_captures:
            read.batch.capture_source = read
            return read.batch
        return self._with_captures(read)

    def decode_json(self, body: bytes, bounds: TimeBounds | None) -> SpanBatch:
        """An ExportTraceServiceRequest in OTLP/JSON; MalformedRequest says what is wrong.
        Its captures are picked at once: the parsed document is too large to keep waiting."""
        return self._with_captures(self.json.read(body, bounds))

    def mark_captures(self, batches: list[SpanBatch], merged: SpanBatch | None = None) -> None:
        """The capture counters' rows (Counter.rows) of the batches that have none yet, in
        one numpy pass over all of them rather than one per request; a stateful counter
        (Retries) sees each span once, in the batches' order. merged: the batches already
        merged (merge_batches), whose columns the pass then reads; it gets the rows too."""
        for counter in self.capture_marks:
            missing = [b for b in batches if counter.name not in b.derived]
            if not missing:
                continue
            if merged is not None and len(missing) == len(batches):
                _split(counter.rows(merged), batches, counter.name)
                continue
            if len(missing) == 1:
                counter.rows(missing[0])
            else:
                _split(counter.select(merge_batches(missing)), missing, counter.name)
            if merged is not None and merged is not batches[0]:
                merged.derived[counter.name] = np.concatenate([b.derived[counter.name] for b in batches])

    def pick_captures(self, batches: list[SpanBatch], merged: SpanBatch | None = None) -> None:
        """The captures of every batch decoded with defer_captures, in one pass; each
        batch gets the captures it would have got alone. merged: these very batches merged
        (merge_batches), every one of them deferred; its columns are then not joined again."""
        self.mark_captures(batches, merged)
        reads = [b.capture_source for b in batches if b.capture_source is not None]
        if merged is not None and len(reads) != len(batches):
            merged = None
        for batch in batches:
            batch.capture_source = None
        self._add_captures(reads, merged)

    def _with_captures(self, read: ReadResult) -> SpanBatch:
        self._add_captures([read])
        return read.batch

    def _add_captures(self, reads: list[ReadResult], merged: SpanBatch | None = None) -> None:
        add_captures(reads, self.slow_threshold_ms, self.subjects.subjects, self.naming.children,
                     self.naming.pairs.intern, self._server_pairs, self.capture_marks, self.capture_budget, merged,
                     self._shared)


def _split(rows: np.ndarray, batches: list[SpanBatch], name: str) -> None:
    """Each batch's share of rows over the batches in order, as views."""
    start = 0
    for batch in batches:
        batch.derived[name] = rows[start:start + len(batch)]
        start += len(batch)
