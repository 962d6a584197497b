"""What decode hands to every later stage: the columnar SpanBatch and suspect Captures.

Every reader (the native one, the Python reference, OTLP/JSON) produces exactly these;
nothing after decode reads protobuf or JSON. docs/development.md lists the columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPAN_KIND_UNSPECIFIED = 0
SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2
# Resource attribute on everything otel-ai exports (incident traces, log events): spans
# carrying it are counted and dropped, so incidents never feed back into detection.
GENERATED_ATTRIBUTE = "otel_ai.generated"


@dataclass(slots=True)
class Capture:
    """One request kept for suspect analysis."""

    subject_id: int
    end_ns: int
    duration_ms: float
    error: bool
    slow: bool  # slower than the subject's capture threshold (and not an error)
    sampled: bool  # picked by the 1-in-N trace sample: an unbiased view of traffic
    trace_id: bytes
    pairs: tuple  # interned (key, value) tuples: resource pairs, then span attributes by key
    exceptions: tuple  # ((type, message), ...)
    span_id: bytes = b""  # for span links from the incident trace to this request
    marks: tuple = ()  # names of the capture counters that picked it (e.g. "throttled")
    weight: float = 1.0  # the span's adjusted count: how many requests it stands for


@dataclass(slots=True)
class InternalSpans:
    """The ids of a request's INTERNAL (and UNSPECIFIED) spans, which are not rows: decode
    re-parents the rows under them within the request, and the service graph's join does
    the same for rows that came in other requests."""

    trace_key: np.ndarray  # uint64, as the rows' trace_key
    span_id: np.ndarray  # uint64, never 0
    parent_span_id: np.ndarray  # uint64, 0 for a root

    def __len__(self) -> int:
        return int(self.span_id.shape[0])


@dataclass(slots=True)
class SpanBatch:
    """Columns of the counted spans: SERVER spans (-> routes) and CLIENT spans with a
    dependency name (-> dependencies), one row each, in request order.

    Ids are little-endian integers of the OTLP bytes (0 where absent or malformed), so
    joins across spans are numpy sorts, not Python dicts.
    """

    subject_id: np.ndarray  # int32: route (SERVER) or dependency (CLIENT) subject
    end_ns: np.ndarray  # int64
    duration_ms: np.ndarray  # float64
    error: np.ndarray  # bool: status ERROR or HTTP >= 500 (never 4xx)
    client_error: np.ndarray  # bool: HTTP 4xx (or a client-side gRPC code)
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # 2 SERVER, 3 CLIENT
    service_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # emitting service (SubjectTable.services)
    resource_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # emitting pod/process (ResourceTable)
    start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    http_status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # 0: none
    grpc_status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # -1: none
    resend_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # http.request.resend_count
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # adjusted count (sampling); 1.0
    # bool: the span carries sampling.priority, SampleRate or tailsampling.policy (the tail-sampling check)
    sampling_attribute: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    trace_key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # 64-bit mix of the trace id
    span_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    parent_span_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # 0: a root span
    spans_total: int = 0
    rejected: int = 0
    reject_message: str = ""
    ignored: int = 0  # spans of other kinds: accepted, not counted
    own: int = 0  # otel-ai's own incident spans coming back through a Collector: never analyzed
    captures: list[Capture] = field(default_factory=list)
    max_end_ns: int = 0
    median_end_ns: int = 0
    # Rows are pre-aggregated requests (metric points, otel_ai.metrics.rows): a row's weight
    # counts requests each seen once, not a sampling estimate. Readers leave it False.
    aggregated: bool = False
    # Masks that counters (otel_ai.counters) derive from the columns, by counter name, so
    # that decode (captures) and the windows compute each one once per batch. Not a column:
    # readers leave it empty.
    derived: dict = field(default_factory=dict)
    # Not rows either: the request's INTERNAL spans, when it had any.
    internal: InternalSpans | None = None
    # Decoded with its captures left for later (Decoder.decode(defer_captures=True)): the
    # reader's ReadResult, until Decoder.pick_captures fills `captures` and clears it.
    capture_source: object | None = None

    def __len__(self) -> int:
        return int(self.subject_id.shape[0])


@dataclass(slots=True)
class TimeBounds:
    """Spans ending outside [lowest_ns, highest_ns] are refused as implausible."""

    lowest_ns: int
    highest_ns: int


class MalformedRequest(ValueError):
    """The body is not a decodable request; the message says why (for the 400 answer)."""
