"""OTLP ExportTraceServiceRequest -> columnar SpanBatch (numpy), plus suspect captures.

This is the per-span hot path. Per span it does the minimum in Python: read kind,
times, status, and the handful of attributes that name the route or dependency.
Everything else (validation, error classification, time bucketing, sampling
decisions) is done on whole numpy columns. Only the spans picked for suspect
analysis (errors, slow requests and a deterministic 1-in-16 trace sample) get their
full attribute set read, in a second pass.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import TraceRequestView

from otel_ai.analysis.redact import PSEUDONYMIZED_KEYS, pseudonym
from otel_ai.resources import ResourceInfo, ResourceTable, instance_of
from otel_ai.subjects import SubjectTable

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2
# gRPC codes that are the server's fault (OTel RPC semantic conventions).
GRPC_SERVER_ERRORS = np.array([2, 4, 12, 13, 14, 15])
# Resource attribute on everything otel-ai exports (incident traces, log events): spans
# carrying it are counted and dropped, so incidents never feed back into detection.
GENERATED_ATTRIBUTE = "otel_ai.generated"
SAMPLE_ONE_IN = 32  # good requests sampled for suspects, by trace id, so whole traces agree
# Captures are costly (every attribute is read); during an incident most spans are errors,
# so cap them per subject and batch to keep ingestion as fast as on a quiet day.
MAX_CAPTURES_PER_SUBJECT = 8

# Never suspects: they identify the subject, describe the outcome itself, or are
# unique per request.
NOT_SUSPECT_KEYS = frozenset({
    "http.route", "http.request.method", "http.method", "rpc.service", "rpc.method", "rpc.system",
    "http.response.status_code", "http.status_code", "rpc.grpc.status_code", "error.type",
    "otel.status_code", "otel.status_description", "otel.scope.name",
    "url.full", "url.path", "url.query", "http.url", "http.target", "client.port", "net.peer.ip", "net.peer.port",
    "net.sock.peer.addr", "net.sock.peer.port", "network.peer.address", "network.peer.port",
    "server.port", "net.host.port", "db.statement", "db.query.text", "code.lineno", "thread.id",
    "thread.name", "process.pid", "process.command_line", "process.command_args",
    "process.executable.path", "http.request.body.size", "http.response.body.size",
    "http.request_content_length", "http.response_content_length", "telemetry.sdk.name",
    "telemetry.sdk.version", "telemetry.sdk.language", "telemetry.auto.version",
    "process.runtime.version", "process.runtime.description", "exception.stacktrace", "http.request.resend_count",
})
# Who sent the request: suspects of rate limits and auth failures. Thousands of values
# are normal, so they skip the interning cap (the capture rings bound them), and old
# semantic-convention names are read as the new ones. Addresses and user ids are
# kept only as pseudonyms.
CLIENT_KEYS = {
    "client.address": "client.address", "http.client_ip": "client.address",
    "user_agent.original": "user_agent.original", "http.user_agent": "user_agent.original",
    "enduser.id": "enduser.id",
}
MAX_CLIENT_PAIRS = 50_000
_SPECIAL_KEYS = NOT_SUSPECT_KEYS | CLIENT_KEYS.keys()
MAX_VALUE_CHARS = 128
MAX_VALUES_PER_KEY = 256  # more distinct values than this: the key is high-cardinality
MAX_KEYS = 512

_ID_SEGMENT = re.compile(r"^(?=.*\d)[\w\-.~%:]{1,}$|^[0-9a-fA-F\-]{16,}$")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


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
    pairs: tuple  # interned (key, value) tuples
    exceptions: tuple  # ((type, message), ...)
    span_id: bytes = b""  # for span links from the incident trace to this request
    marks: tuple = ()  # names of the capture counters that picked it (e.g. "throttled")


@dataclass(slots=True)
class SpanBatch:
    """Columns of the counted spans: SERVER spans (-> routes) and CLIENT spans with a
    dependency name (-> dependencies), one row each, in request order.

    This is the contract between decode (Python or native) and every later stage;
    both decoders fill every column. Ids are little-endian integers of the OTLP bytes
    (0 where absent), so joins across spans are numpy sorts, not Python dicts.
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
    # Masks that counters (otel_ai.counters) derive from the columns, by counter name,
    # so that decode (captures) and the windows compute each one once per batch.
    derived: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.subject_id.shape[0])


@dataclass(slots=True)
class TimeBounds:
    """Spans ending outside [lowest_ns, highest_ns] are refused as implausible."""

    lowest_ns: int
    highest_ns: int


def _int_of(value) -> int:
    number = value.int_value
    if number:
        return number
    text = value.string_value
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0


def _value_text(value) -> str | None:
    text = value.string_value
    if text:
        return text[:MAX_VALUE_CHARS]
    which = value.WhichOneof("value")
    if which == "int_value":
        return str(value.int_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "string_value":
        return ""
    return None  # doubles, arrays, maps and bytes are never useful suspects


class PairInterner:
    """Bounded interning of (key, value) pairs, refusing high-cardinality keys.

    Interning keeps memory per captured request to one tuple of shared references;
    the per-key value cap is what keeps request ids and the like out."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self._values_per_key: dict[str, int] = {}
        self.high_cardinality: set[str] = set()

    def intern(self, key: str, value: str) -> tuple[str, str] | None:
        pair = (key, value)
        found = self._pairs.get(pair)
        if found is not None:
            return found
        if key in self.high_cardinality:
            return None
        count = self._values_per_key.get(key, 0)
        if count >= MAX_VALUES_PER_KEY:
            self.high_cardinality.add(key)
            return None
        if count == 0 and len(self._values_per_key) >= MAX_KEYS:
            return None
        self._values_per_key[key] = count + 1
        self._pairs[pair] = pair
        return pair


class ChildIndex:
    """Recent CLIENT spans by (trace id, service), to say which dependency a request
    called, and whether that call failed or took most of the request's time."""

    def __init__(self, max_keys: int = 100_000):
        self.max_keys = max_keys
        self._children: dict[tuple[bytes, str], list[tuple[str, bool, float, tuple]]] = {}

    def add(self, trace_id: bytes, service: str, dependency: str, error: bool, duration_ms: float, exceptions: tuple) -> None:
        key = (trace_id, service)
        entry = self._children.get(key)
        if entry is None:
            if len(self._children) >= self.max_keys:
                for old in list(itertools.islice(self._children, self.max_keys // 4)):
                    del self._children[old]
            self._children[key] = [(dependency, error, duration_ms, exceptions)]
        elif len(entry) < 32:
            entry.append((dependency, error, duration_ms, exceptions))

    def get(self, trace_id: bytes, service: str):
        return self._children.get((trace_id, service), ())


def _dependency_name(get, rpc) -> str:
    """peer.service, else server.address, else db.system/db.namespace (old names too)."""
    for key in ("peer.service", "server.address", "net.peer.name"):
        value = get(key)
        if value is not None and value.string_value:
            return value.string_value[:128]
    system = get("db.system.name") or get("db.system")
    if system is not None and system.string_value:
        namespace = get("db.namespace") or get("db.name")
        if namespace is not None and namespace.string_value:
            return f"{system.string_value}/{namespace.string_value}"[:128]
        return system.string_value[:128]
    return "" if rpc is None else rpc.string_value[:128]


def route_from_span_name(name: str) -> str:
    """A route-like name for SERVER spans without http.route: the span name, with
    anything that looks like an id or a query string replaced, so that a raw URL path
    never becomes a route."""
    name = name[:200]
    method, _, rest = name.partition(" ")
    if method not in _HTTP_METHODS:
        method, rest = "", name
    if "/" not in rest and "?" not in rest:
        return name
    path = rest.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    segments = ["{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/")]
    templated = "/".join(segments) or "/"
    return f"{method} {templated}".strip()


class Decoder:
    """Turns requests into SpanBatches. Not thread-safe: callers serialise."""

    def __init__(self, subjects: SubjectTable):
        self.subjects = subjects
        self.pairs = PairInterner()
        self.children = ChildIndex()
        # Per subject: duration above which a request counts as slow enough to capture.
        self.slow_threshold_ms = np.full(0, np.inf)
        self._unrouted: dict[tuple[str, str, str], int] = {}
        self.resources = ResourceTable()
        self._resource_cache: dict[bytes, tuple[ResourceInfo, int] | None] = {}
        # Counters (otel_ai.counters) whose requests the enabled detectors need captured as
        # bad, like errors: one numpy mask per batch each.
        self.capture_marks: tuple = ()
        self._client_pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def _resource(self, resource) -> tuple[ResourceInfo, int] | None:
        """The resource's service, interned suspect pairs and id, cached by its bytes:
        the same few hundred pods send every batch. None marks otel-ai's own output."""
        key = resource.SerializeToString(deterministic=True)
        found = self._resource_cache.get(key, False)
        if found is False:
            if len(self._resource_cache) >= 10_000:
                self._resource_cache.clear()
            found = self._resource_cache[key] = self._read_resource(resource)
        return found

    def _read_resource(self, resource) -> tuple[ResourceInfo, int] | None:
        if GENERATED_ATTRIBUTE in resource.attributes:
            return None  # the loop guard
        service = "unknown_service"
        pairs = []
        texts: dict[str, str] = {}
        for key, value in resource.attributes.items():
            text = _value_text(value)
            if text is None:
                continue
            texts[key] = text
            if key == "service.name":
                service = text or service
            if key in NOT_SUSPECT_KEYS:
                continue
            pair = self.pairs.intern(key, text)
            if pair is not None:
                pairs.append(pair)
        info = ResourceInfo(service, self.subjects.service_id(service), instance_of(texts),
                            texts.get("service.version", ""), tuple(pairs))
        return info, self.resources.intern(info)

    def _route_subject(self, service: str, method: str, name: str) -> int:
        key = (service, method, name)
        sid = self._unrouted.get(key)
        if sid is None:
            if len(self._unrouted) > 50_000:
                self._unrouted.clear()
            sid = self.subjects.route(service, method, route_from_span_name(name))
            self._unrouted[key] = sid
        return sid

    def decode(self, request: TraceRequestView, bounds: TimeBounds | None) -> SpanBatch:
        subjects = self.subjects
        route_of = subjects.route
        rows: list[tuple] = []
        spans: list = []
        trace_ids: list[bytes] = []
        # Per ResourceSpans: its first row and (resource, id); the columns and pass 2 map
        # rows back to resources, so the hot loop appends nothing per span for them.
        block_starts: list[int] = []
        blocks: list[tuple[ResourceInfo, int]] = []
        total = 0
        own = 0
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
                        continue
                    get = span.attributes.get
                    grpc_status = -1
                    resend = 0
                    value = get("http.response.status_code")
                    if value is None:
                        value = get("http.status_code")
                    http_status = 0 if value is None else _int_of(value)
                    rpc = get("rpc.service")
                    if rpc is not None:
                        value = get("rpc.grpc.status_code")
                        if value is not None:
                            grpc_status = _int_of(value)
                    if kind == SPAN_KIND_SERVER:
                        method = get("http.request.method")
                        if method is None:
                            method = get("http.method")
                        method = "" if method is None else method.string_value[:16]
                        route = get("http.route")
                        if route is not None:
                            sid = route_of(service, method, route.string_value[:256])
                        elif rpc is not None:
                            sid = self._rpc_subject(service, rpc, get("rpc.method"), get("rpc.system"))
                        else:
                            sid = self._route_subject(service, method, span.name)
                    else:
                        dependency = _dependency_name(get, rpc)
                        if not dependency:
                            continue
                        sid = subjects.dependency(dependency)
                        value = get("http.request.resend_count")
                        if value is not None:
                            resend = _int_of(value)
                    rows.append((sid, kind, span.start_time_unix_nano, span.end_time_unix_nano,
                                 span.status.code, http_status, grpc_status, resend))
                    spans.append(span)
                    trace_ids.append(span.trace_id)
        batch = self._columns(rows, spans, trace_ids, (block_starts, blocks), total, bounds)
        if own:
            batch.own = own
            batch.spans_total += own
        return batch

    def _rpc_subject(self, service: str, rpc_service, rpc_method, rpc_system) -> int:
        system = "rpc" if rpc_system is None else rpc_system.string_value or "rpc"
        method_name = "" if rpc_method is None else rpc_method.string_value
        return self.subjects.route(service, system.upper()[:16], f"{rpc_service.string_value}/{method_name}"[:256])

    def _columns(self, rows, spans, trace_ids, resources, total, bounds) -> SpanBatch:
        n = len(rows)
        if n == 0:
            empty = np.zeros(0)
            return SpanBatch(empty.astype(np.int32), empty.astype(np.int64), empty, empty.astype(bool),
                             empty.astype(bool), spans_total=total, ignored=total)
        try:
            table = np.array(rows, dtype=np.int64)
        except OverflowError:
            # OTLP times are uint64; values past int64 are garbage: make them invalid (0).
            limit = np.iinfo(np.int64).max
            table = np.array([tuple(v if v <= limit else 0 for v in row) for row in rows], dtype=np.int64)
        sid, kind, start, end = table[:, 0], table[:, 1], table[:, 2], table[:, 3]
        status, http_status, grpc_status, resend = table[:, 4], table[:, 5], table[:, 6], table[:, 7]
        invalid = (end <= 0) | (start <= 0) | (end < start)
        reasons = []
        if invalid.any():
            reasons.append(f"{int(invalid.sum())} with end before start or missing times")
        if bounds is not None:
            out_of_range = ~invalid & ((end < bounds.lowest_ns) | (end > bounds.highest_ns))
            if out_of_range.any():
                reasons.append(f"{int(out_of_range.sum())} with end time too far from now")
                invalid |= out_of_range
        client_error = (http_status >= 400) & (http_status < 500)
        error = ((status == STATUS_ERROR) | (http_status >= 500)) & ~client_error
        has_grpc = grpc_status >= 0
        if has_grpc.any():
            server_fault = np.isin(grpc_status, GRPC_SERVER_ERRORS)
            flagged = has_grpc & (status == STATUS_ERROR)
            error = np.where(has_grpc, server_fault, error)
            client_error |= flagged & ~server_fault
        keep = ~invalid
        duration_ms = (end - start) / 1e6
        block_starts, blocks = resources
        block_sizes = np.diff(np.append(np.asarray(block_starts, dtype=np.int64), n))
        service_id = np.repeat(np.array([b[0].service_id for b in blocks], dtype=np.int32), block_sizes)
        resource_id = np.repeat(np.array([b[1] for b in blocks], dtype=np.int32), block_sizes)
        batch = SpanBatch(
            subject_id=sid[keep].astype(np.int32),
            end_ns=end[keep],
            duration_ms=duration_ms[keep],
            error=error[keep],
            client_error=client_error[keep],
            kind=kind[keep].astype(np.int8),
            service_id=service_id[keep],
            resource_id=resource_id[keep],
            start_ns=start[keep],
            http_status=np.where((http_status > 0) & (http_status < 1000), http_status, 0)[keep].astype(np.int16),
            grpc_status=np.where((grpc_status >= 0) & (grpc_status < 128), grpc_status, -1)[keep].astype(np.int8),
            resend_count=np.clip(resend, 0, 32767)[keep].astype(np.int16),
            weight=np.ones(int(keep.sum()), dtype=np.float32),
            trace_key=trace_keys(trace_ids)[keep],
            span_id=id64([span.span_id for span in spans])[keep],
            parent_span_id=id64([span.parent_span_id for span in spans])[keep],
            spans_total=total,
            rejected=int(invalid.sum()),
            reject_message=("rejected spans: " + "; ".join(reasons)) if reasons else "",
            ignored=total - n,
        )
        if len(batch):
            batch.max_end_ns = int(batch.end_ns.max())
            batch.median_end_ns = int(np.median(batch.end_ns))
        self._capture(batch, keep, kind, sid, end, duration_ms, error, spans, trace_ids, resources)
        return batch

    def _capture(self, batch, keep, kind, sid, end, duration_ms, error, spans, trace_ids, resources) -> None:
        """Second pass, over the few spans suspects need: all errors, the slow ones, those
        the capture counters mark (429s, 401/403s, retries) and a 1-in-SAMPLE_ONE_IN
        sample by trace id."""
        known = self.slow_threshold_ms
        slow_thr = np.full(sid.shape[0], np.inf)
        inside = sid < known.shape[0]
        slow_thr[inside] = known[sid[inside]]
        joined = b"".join(trace_ids)
        if len(joined) == 16 * len(trace_ids):  # valid ids: one vectorised read
            sample_byte = np.frombuffer(joined, dtype=np.uint8).reshape(-1, 16)[:, 15]
        else:
            sample_byte = np.array([t[-1] if t else 0 for t in trace_ids], dtype=np.int16)
        sampled = sample_byte < (256 // SAMPLE_ONE_IN)
        slow = (duration_ms > slow_thr) & ~error
        usual = keep & (error | slow | sampled)
        marks = self._marks(batch, keep)
        only_marked = np.logical_or.reduce([marked for _, marked in marks]) & ~usual if marks else np.zeros_like(usual)
        if not (usual.any() or only_marked.any()):
            return
        is_client = kind == SPAN_KIND_CLIENT
        chosen = _first_per_group(usual, sid, MAX_CAPTURES_PER_SUBJECT)
        marked_idx = np.flatnonzero(only_marked)
        if marked_idx.shape[0]:
            # Requests picked only by a mark: the first per subject and batch, on top of the
            # usual cap, so they never crowd out the errors and the sample.
            _, first = np.unique(sid[marked_idx], return_index=True)
            chosen = chosen.copy()
            chosen[marked_idx[first]] = True
        dependency_name = self.subjects.subjects
        block_starts, blocks = resources
        starts = np.asarray(block_starts)

        def owner(i: int) -> tuple[str, tuple]:
            info = blocks[int(np.searchsorted(starts, i, side="right")) - 1][0]
            return info.service, info.pairs

        # Every usual interesting CLIENT span goes into the child index (cheap), so the
        # requests that called it can name it; only the capped few are captured
        # with all their attributes (costly) for the dependency's own suspects.
        # (A call picked only by a mark, neither failed nor slow, names nothing there.)
        for i in np.flatnonzero((usual | chosen) & is_client):
            span = spans[i]
            err = bool(error[i])
            exceptions = _exceptions(span) if err else ()
            service, resource_pairs = owner(i)
            if usual[i]:
                self.children.add(trace_ids[i], service, dependency_name[sid[i]].service, err, float(duration_ms[i]),
                                  exceptions)
            if chosen[i]:
                batch.captures.append(Capture(int(sid[i]), int(end[i]), float(duration_ms[i]), err, bool(slow[i]),
                                              bool(sampled[i]), trace_ids[i], self._pairs(span, resource_pairs, ()),
                                              exceptions, span.span_id, _marks_of(marks, i)))
        server_idx = np.flatnonzero(chosen & ~is_client)
        for i in server_idx:
            span = spans[i]
            err = bool(error[i])
            dur = float(duration_ms[i])
            extra = []
            child_exceptions = []
            slowest = None
            service, resource_pairs = owner(i)
            for dep, child_err, child_ms, child_exc in self.children.get(trace_ids[i], service):
                if child_err:
                    extra.append(("dependency.failed", dep))
                    child_exceptions.extend(child_exc)
                if child_ms >= 0.5 * dur and (slowest is None or child_ms > slowest[1]):
                    slowest = (dep, child_ms)
            if slowest is not None:
                extra.append(("dependency.slow", slowest[0]))
            exceptions = (_exceptions(span) + tuple(child_exceptions)) if err else ()
            pairs = self._pairs(span, resource_pairs, extra, skip_service=True)
            batch.captures.append(Capture(int(sid[i]), int(end[i]), dur, err, bool(slow[i]), bool(sampled[i]),
                                          trace_ids[i], pairs, exceptions, span.span_id, _marks_of(marks, i)))

    def _marks(self, batch: SpanBatch, keep: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(name, rows over all decoded spans) of each capture counter that selects any."""
        marks = []
        for counter in self.capture_marks:
            rows = counter.rows(batch)
            if rows.any():
                if rows.shape[0] != keep.shape[0]:  # some spans were refused: back to decode's rows
                    rows, kept = np.zeros(keep.shape[0], dtype=bool), rows
                    rows[keep] = kept
                marks.append((counter.name, rows))
        return marks

    def _pairs(self, span, resource_pairs: tuple, extra, skip_service: bool = False) -> tuple:
        intern = self.pairs.intern
        out = [p for p in resource_pairs if not (skip_service and p[0] == "service.name")]
        for key, value in span.attributes.items():
            if key in _SPECIAL_KEYS:  # one lookup for the usual key, which is neither
                if key in CLIENT_KEYS:
                    text = _value_text(value)
                    if text:
                        out.append(self._client_pair(CLIENT_KEYS[key], text))
                continue
            text = _value_text(value)
            if text is None:
                continue
            pair = intern(key, text)
            if pair is not None:
                out.append(pair)
        for key, value in extra:
            pair = intern(key, value)
            if pair is not None and pair not in out:
                out.append(pair)
        return tuple(out)


    def _client_pair(self, key: str, text: str) -> tuple[str, str]:
        """The shared (key, value) of a client attribute, pseudonymized where it names a
        person or an address; the cache is cleared when full, so it stays bounded."""
        found = self._client_pairs.get((key, text))
        if found is None:
            if len(self._client_pairs) >= MAX_CLIENT_PAIRS:
                self._client_pairs.clear()
            found = self._client_pairs[(key, text)] = (key, pseudonym(text) if key in PSEUDONYMIZED_KEYS else text)
        return found


def _marks_of(marks: list[tuple[str, np.ndarray]], row: int) -> tuple:
    return tuple(name for name, marked in marks if marked[row])


def id64(ids: list[bytes]) -> np.ndarray:
    """8-byte span ids as little-endian uint64; 0 for an absent or malformed id."""
    joined = b"".join(ids)
    if len(joined) == 8 * len(ids):
        return np.frombuffer(joined, dtype="<u8").astype(np.uint64)
    return np.array([int.from_bytes(i, "little") if len(i) == 8 else 0 for i in ids], dtype=np.uint64)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def trace_keys(trace_ids: list[bytes]) -> np.ndarray:
    """A 64-bit key per 16-byte trace id (high half times a golden-ratio constant, xor the
    low half): collisions among the traces in flight are negligible, and joins can sort
    one uint64 column. 0 for a malformed id."""
    joined = b"".join(trace_ids)
    if len(joined) == 16 * len(trace_ids):
        halves = np.frombuffer(joined, dtype="<u8").reshape(-1, 2)
    else:
        halves = np.array([(int.from_bytes(t[:8], "little"), int.from_bytes(t[8:], "little")) if len(t) == 16
                           else (0, 0) for t in trace_ids], dtype=np.uint64).reshape(-1, 2)
    with np.errstate(over="ignore"):
        return (halves[:, 0] * _MIX) ^ halves[:, 1]


def _first_per_group(mask: np.ndarray, group: np.ndarray, limit: int) -> np.ndarray:
    """mask, keeping at most `limit` True entries per group value (the earliest ones)."""
    idx = np.flatnonzero(mask)
    if idx.shape[0] <= limit:
        return mask
    order = np.argsort(group[idx], kind="stable")
    sorted_groups = group[idx][order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.arange(idx.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, idx.shape[0]]))
    limited = np.zeros_like(mask)
    limited[idx[order][rank < limit]] = True
    return limited


def _exceptions(span) -> tuple:
    found = []
    for event in span.events:
        if event.name != "exception":
            continue
        attributes = event.attributes
        exc_type = attributes.get("exception.type")
        exc_message = attributes.get("exception.message")
        found.append((
            "" if exc_type is None else exc_type.string_value[:MAX_VALUE_CHARS],
            "" if exc_message is None else exc_message.string_value[:200],
        ))
        if len(found) >= 4:
            break
    if not found and span.status.message:
        found.append(("", span.status.message[:200]))
    return tuple(found)
