"""OTLP ExportMetricsServiceRequest -> RED points and utilization samples.

Per data point this reads only what names the stream (route or dependency, status)
and its buckets; validation and re-binning into otel-ai's latency bins run on numpy
arrays per bucket layout. Routes and dependencies are keyed exactly as spans are
(otel_ai.decode), so one route's metrics and spans meet in the same subject.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from otel_ai.decode import GENERATED_ATTRIBUTE, SPAN_KIND_CLIENT, TimeBounds
from otel_ai.decode.columns import GRPC_SERVER_ERRORS
from otel_ai.decode.naming import dependency_name, span_subject
from otel_ai.decode.reference import int_of as _int_of
from otel_ai.decode.reference import view_text
from otel_ai.histogram import BINS
from otel_ai.metrics import semconv
from otel_ai.metrics.points import (
    Exemplar,
    MetricBatch,
    MetricResource,
    RedPoints,
    SeriesKey,
    UtilizationSample,
)
from otel_ai.metrics.rebin import exponential_buckets, explicit_buckets, rebin
from otel_ai.proto.otel_ai.v1.metrics_view_pb2 import MetricsRequestView
from otel_ai.resources import instance_of
from otel_ai.subjects import SubjectTable

DELTA, CUMULATIVE = 1, 2
NO_RECORDED_VALUE = 1  # data point flag: a staleness marker, not a measurement
MAX_BUCKETS = 2048  # per data point; OTel SDKs default to 160 (exponential) or ~16 (explicit)
MAX_EXEMPLARS_PER_POINT = 4
MIN_SCALE, MAX_SCALE = -10, 20  # the exponential scales the OTLP spec allows
_INT64_MAX = 2**63 - 1
_SERVER_GRPC_CODES = frozenset(int(code) for code in GRPC_SERVER_ERRORS)
_RESOURCE_CACHE = 10_000


@dataclass(slots=True)
class _Rows:
    """Columns under construction, plus each row's buckets by layout for re-binning."""

    stream: list[int] = field(default_factory=list)
    subject_id: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    resource: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    error: list[bool] = field(default_factory=list)
    client_error: list[bool] = field(default_factory=list)
    cumulative: list[bool] = field(default_factory=list)
    http_status: list[int] = field(default_factory=list)
    grpc_status: list[int] = field(default_factory=list)
    # Explicit buckets by bucket count: (row, bounds, counts, min, max, ms per unit).
    explicit: dict[int, list[tuple]] = field(default_factory=dict)
    # Exponential buckets by bucket count (the zero bucket first):
    # (row, (scale, offset, positive buckets, ms per unit), counts, min ms, max ms).
    exponential: dict[int, list[tuple]] = field(default_factory=dict)
    exemplars: list[Exemplar] = field(default_factory=list)


class _Rejections:
    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def message(self) -> str:
        if not self.reasons:
            return ""
        return "rejected data points: " + "; ".join(f"{n} {reason}" for reason, n in self.reasons.items())


class MetricsDecoder:
    """Turns MetricsRequestViews into MetricBatches. Not thread-safe: callers serialise
    (the subject table is shared with the span decoder)."""

    def __init__(self, subjects: SubjectTable) -> None:
        self.subjects = subjects
        self._resources: dict[bytes, tuple[MetricResource, bytes] | None] = {}

    def decode(self, request: MetricsRequestView, bounds: TimeBounds | None = None) -> MetricBatch:
        rows = _Rows()
        utilization: list[tuple] = []
        rejected = _Rejections()
        resources: list[MetricResource] = []
        total = ignored = 0
        for resource_metrics in request.resource_metrics:
            found = self._resource(resource_metrics.resource)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                for metric in scope_metrics.metrics:
                    which = metric.WhichOneof("data")
                    if which is None:
                        continue
                    data = getattr(metric, which)
                    n = len(data.data_points)
                    total += n
                    if found is None:  # otel-ai's own KPIs coming back through a Collector
                        ignored += n
                        continue
                    resource, resource_hash = found
                    red = semconv.RED_SOURCES.get(metric.name)
                    util = semconv.UTILIZATION_SOURCES.get(metric.name)
                    if red is not None and which in ("histogram", "exponential_histogram"):
                        if data.aggregation_temporality not in (DELTA, CUMULATIVE):
                            rejected.add("with no aggregation temporality", n)
                            continue
                        if not resources or resources[-1] is not resource:
                            resources.append(resource)
                        prefix = b"\x00".join((resource_hash, scope.name.encode(), scope.version.encode(),
                                               metric.name.encode(), metric.unit.encode(), bytes([which[0] == "e"])))
                        ignored += self._red(rows, data, which == "exponential_histogram", red, metric.unit,
                                             resource, len(resources) - 1, prefix, bounds, rejected)
                    elif util is not None and which in ("gauge", "sum"):
                        instance = self.subjects.instance(resource.service, resource.instance or resource.service)
                        ignored += _utilization(utilization, data.data_points, util, metric.name, resource,
                                                resource_metrics.resource, instance, bounds, rejected)
                    else:
                        ignored += n
        red_points = _columns(rows, resources, rejected)
        return MetricBatch(red_points, _samples(utilization), total, rejected.total, rejected.message(), ignored)

    # ---- resources ----
    def _resource(self, resource) -> tuple[MetricResource, bytes] | None:
        """The resource and a hash of all its attributes (part of every stream's identity),
        cached by that hash (not by the bytes: a resource may be large); None for
        otel-ai's own output."""
        digest = hashlib.blake2b(resource.SerializeToString(deterministic=True), digest_size=16).digest()
        found = self._resources.get(digest, False)
        if found is False:
            if len(self._resources) >= _RESOURCE_CACHE:
                self._resources.clear()
            found = self._resources[digest] = self._read_resource(resource, digest)
        return found

    def _read_resource(self, resource, digest: bytes) -> tuple[MetricResource, bytes] | None:
        attributes = resource.attributes
        if GENERATED_ATTRIBUTE in attributes:
            return None
        texts = {k: attributes[k].string_value[:128] for k in ("service.name", *_INSTANCE_AND_CONTAINER)
                 if k in attributes}
        service = texts.get("service.name") or "unknown_service"
        return MetricResource(service, instance_of(texts), self.subjects.service_id(service)), digest

    # ---- request-duration histograms ----
    def _red(self, rows: _Rows, data, exponential: bool, source: semconv.RedSource, unit: str,
             resource: MetricResource, resource_index: int, prefix: bytes, bounds: TimeBounds | None,
             rejected: _Rejections) -> int:
        """Appends the metric's valid points; returns how many were ignored."""
        ms_per_unit = semconv.MS_PER_UNIT.get(unit) or semconv.MS_PER_UNIT[source.default_unit]
        cumulative = data.aggregation_temporality == CUMULATIVE
        ignored = 0
        for point in data.data_points:
            if point.flags & NO_RECORDED_VALUE:
                ignored += 1
                continue
            reason = _time_problem(point.start_time_unix_nano, point.time_unix_nano, bounds)
            if reason:
                rejected.add(reason)
                continue
            get = point.attributes.get
            if source.kind == semconv.SERVER:
                subject_id = self._route(resource.service, get)
            else:
                found = span_subject(SPAN_KIND_CLIENT, get, view_text, _int_of, "")
                dependency = "" if found is None else dependency_name(*found[:3])
                if not dependency:
                    ignored += 1  # as for CLIENT spans: nothing names the dependency
                    continue
                subject_id = self.subjects.dependency(dependency)
            row = len(rows.count)
            # A cumulative point's min and max are over the stream's whole life, not its last
            # interval: they would reshape every interval's latency, so only delta points use them.
            reason = (_exponential_buckets(rows, row, point, ms_per_unit, not cumulative) if exponential
                      else _explicit_buckets(rows, row, point, ms_per_unit, not cumulative))
            if reason:
                rejected.add(reason)
                continue
            error, client_error, http_status, grpc_status = _outcome(get)
            start_ns = point.start_time_unix_nano
            rows.stream.append(_stream_key(prefix, point.attributes, start_ns if cumulative else 0))
            rows.subject_id.append(subject_id)
            rows.kind.append(source.kind)
            rows.resource.append(resource_index)
            rows.start_ns.append(start_ns)
            rows.end_ns.append(point.time_unix_nano)
            rows.count.append(point.count)
            rows.error.append(error)
            rows.client_error.append(client_error)
            rows.cumulative.append(cumulative)
            rows.http_status.append(http_status)
            rows.grpc_status.append(grpc_status)
            _exemplars(rows.exemplars, row, point.exemplars, ms_per_unit)
        return ignored

    def _route(self, service: str, get) -> int:
        method = get("http.request.method")
        if method is None:
            method = get("http.method")
        method = "" if method is None else method.string_value[:16]
        route = get("http.route")
        if route is not None:
            return self.subjects.route(service, method, route.string_value[:256])
        rpc = get("rpc.service")
        if rpc is not None:
            system = get("rpc.system")
            system = "rpc" if system is None else system.string_value or "rpc"
            rpc_method = get("rpc.method")
            name = "" if rpc_method is None else rpc_method.string_value
            return self.subjects.route(service, system.upper()[:16], f"{rpc.string_value}/{name}"[:256])
        # What a SERVER span without http.route is named ("{method}"), so both agree.
        return self.subjects.route(service, method, method or "HTTP")


_INSTANCE_AND_CONTAINER = ("k8s.pod.name", "service.instance.id", "host.name", "container.id", *semconv.CONTAINER_KEYS)


def _time_problem(start_ns: int, end_ns: int, bounds: TimeBounds | None) -> str:
    if end_ns == 0 or end_ns > _INT64_MAX or start_ns > end_ns:
        return "with a missing time or a start after the end"
    if bounds is not None and not bounds.lowest_ns <= end_ns <= bounds.highest_ns:
        return "with a time too far from now"
    return ""


def _outcome(get) -> tuple[bool, bool, int, int]:
    """(server error, client error, HTTP status, gRPC code) of a stream, by the rules spans
    follow: 5xx and server-side gRPC codes are errors, 4xx never are; error.type alone is
    an error. The codes as SpanBatch holds them (0 and -1 when absent or out of range)."""
    value = get("http.response.status_code")
    if value is None:
        value = get("http.status_code")
    status = 0 if value is None else _int_of(value)
    http_status = status if 0 < status < 1000 else 0
    value = get("rpc.grpc.status_code")
    code = None if value is None else _int_of(value)
    grpc_status = code if code is not None and 0 <= code < 128 else -1
    if 400 <= status < 500:
        return False, True, http_status, grpc_status
    if status >= 500:
        return True, False, http_status, grpc_status
    if code is not None:
        if code in _SERVER_GRPC_CODES:
            return True, False, http_status, grpc_status
        if code:
            return False, True, http_status, grpc_status
    error_type = get("error.type")
    failed = error_type is not None and bool(error_type.string_value or error_type.int_value)
    return failed, False, http_status, grpc_status


def _stream_key(prefix: bytes, attributes, start_ns: int) -> int:
    """64-bit identity of a stream: resource, scope, metric, every point attribute and,
    for cumulative streams, the start time (a restarted process is a new stream)."""
    parts = [prefix]
    for key in sorted(attributes):
        parts.append(key.encode())
        parts.append(attributes[key].SerializeToString())
    parts.append(start_ns.to_bytes(8, "little"))
    return int.from_bytes(hashlib.blake2b(b"\x00".join(parts), digest_size=8).digest(), "little")


def _explicit_buckets(rows: _Rows, row: int, point, ms_per_unit: float, use_extremes: bool) -> str:
    counts = point.bucket_counts
    bounds = point.explicit_bounds
    n = len(counts)
    if n == 0:
        return ""  # a count without buckets: requests without latency (its bins stay empty)
    if n != len(bounds) + 1:
        return "with bucket counts that do not match the bounds"
    if n > MAX_BUCKETS:
        return f"with more than {MAX_BUCKETS} buckets"
    if sum(counts) != point.count:
        return "whose count differs from the sum of its buckets"
    minimum = point.min if use_extremes and point.HasField("min") else math.nan
    maximum = point.max if use_extremes and point.HasField("max") else math.nan
    rows.explicit.setdefault(n, []).append((row, list(bounds), list(counts), minimum, maximum, ms_per_unit))
    return ""


def _exponential_buckets(rows: _Rows, row: int, point, ms_per_unit: float, use_extremes: bool) -> str:
    positive = point.positive.bucket_counts
    negative = point.negative.bucket_counts
    if len(positive) + len(negative) > MAX_BUCKETS:
        return f"with more than {MAX_BUCKETS} buckets"
    if not MIN_SCALE <= point.scale <= MAX_SCALE:
        return f"with a scale outside [{MIN_SCALE}, {MAX_SCALE}]"
    # Durations are never below zero: the zero and negative buckets are all "0 ms".
    zero = point.zero_count + sum(negative)
    if zero + sum(positive) != point.count:
        return "whose count differs from the sum of its buckets"
    minimum = point.min * ms_per_unit if use_extremes and point.HasField("min") and point.min > 0 else 0.0
    maximum = point.max * ms_per_unit if use_extremes and point.HasField("max") and point.max >= 0 else math.inf
    rows.exponential.setdefault(len(positive) + 1, []).append(
        (row, (point.scale, point.positive.offset, len(positive), ms_per_unit), [zero, *positive], minimum, maximum))
    return ""


def _exemplars(out: list[Exemplar], row: int, exemplars, ms_per_unit: float) -> None:
    kept = 0
    for exemplar in exemplars:
        trace_id = exemplar.trace_id
        if len(trace_id) != 16 or len(exemplar.span_id) != 8 or not any(trace_id):
            continue
        value = exemplar.as_int if exemplar.WhichOneof("value") == "as_int" else exemplar.as_double
        out.append(Exemplar(row, exemplar.time_unix_nano, trace_id, exemplar.span_id, float(value) * ms_per_unit))
        kept += 1
        if kept >= MAX_EXEMPLARS_PER_POINT:
            return


def _columns(rows: _Rows, resources: list[MetricResource], rejected: _Rejections) -> RedPoints:
    n = len(rows.count)
    if n == 0:
        return RedPoints(resources=resources)
    hist = np.zeros((n, BINS))
    valid = np.ones(n, dtype=bool)
    for size, group in rows.explicit.items():
        index = np.array([g[0] for g in group], dtype=np.intp)
        bounds = np.array([g[1] for g in group], dtype=np.float64).reshape(len(group), size - 1)
        counts = np.array([g[2] for g in group], dtype=np.float64)
        good = np.isfinite(bounds).all(axis=1) & (np.diff(bounds, axis=1) > 0).all(axis=1)
        if not good.all():
            rejected.add("with explicit bounds that are not finite and increasing", int((~good).sum()))
            valid[index[~good]] = False
        index, bounds, counts = index[good], bounds[good], counts[good]
        if index.shape[0] == 0:
            continue
        extremes = np.array([(g[3], g[4]) for g, ok in zip(group, good) if ok], dtype=np.float64)
        ms_per_unit = np.array([g[5] for g, ok in zip(group, good) if ok])
        lower, upper = explicit_buckets(bounds * ms_per_unit[:, None], extremes[:, 0] * ms_per_unit,
                                        extremes[:, 1] * ms_per_unit)
        rebinned = rebin(lower, upper, counts)
        if size == 1:  # one bucket for everything: only min and max say anything about latency
            rebinned[np.isnan(extremes).any(axis=1)] = 0.0
        hist[index] = rebinned
    for group in rows.exponential.values():
        index = np.array([g[0] for g in group], dtype=np.intp)
        edges = [_exponential_edges(*g[1]) for g in group]
        extremes = np.array([(g[3], g[4]) for g in group])
        lower = np.maximum(np.array([e[0] for e in edges]), extremes[:, :1])
        upper = np.minimum(np.array([e[1] for e in edges]), extremes[:, 1:])
        hist[index] = rebin(lower, np.maximum(upper, lower), np.array([g[2] for g in group], dtype=np.float64))
    red = RedPoints(
        stream=np.array(rows.stream, dtype=np.uint64),
        subject_id=np.array(rows.subject_id, dtype=np.int32),
        kind=np.array(rows.kind, dtype=np.int8),
        resource=np.array(rows.resource, dtype=np.int32),
        start_ns=np.array(rows.start_ns, dtype=np.int64),
        end_ns=np.array(rows.end_ns, dtype=np.int64),
        count=np.array(rows.count, dtype=np.float64),
        hist=hist,
        error=np.array(rows.error, dtype=bool),
        client_error=np.array(rows.client_error, dtype=bool),
        cumulative=np.array(rows.cumulative, dtype=bool),
        http_status=np.array(rows.http_status, dtype=np.int16),
        grpc_status=np.array(rows.grpc_status, dtype=np.int8),
        resources=resources,
        exemplars=rows.exemplars,
    )
    return red if valid.all() else red.take(np.flatnonzero(valid))


@functools.lru_cache(maxsize=256)
def _exponential_edges(scale: int, offset: int, buckets: int, ms_per_unit: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the zero bucket (a point mass at 0) and the positive buckets; cached, as
    a stream keeps its scale and offset from one export to the next."""
    lower, upper = exponential_buckets(scale, offset, buckets, ms_per_unit)
    return np.concatenate(([0.0], lower)), np.concatenate(([0.0], upper))


# ---- resource utilization ----

def _utilization(out: list[tuple], points, source: semconv.UtilizationSource, name: str,
                 resource: MetricResource, raw_resource, subject_id: int, bounds: TimeBounds | None,
                 rejected: _Rejections) -> int:
    """Appends (series, source, time, value, state, cpu, subject) per valid point; returns
    how many were ignored."""
    container = ""
    if source.per_container:
        for key in semconv.CONTAINER_KEYS:
            if key in raw_resource.attributes:
                container = raw_resource.attributes[key].string_value[:128]
                break
    series = SeriesKey(resource.service, resource.instance, container, source.resource, name)
    ignored = 0
    for point in points:
        if point.flags & NO_RECORDED_VALUE:
            ignored += 1
            continue
        reason = _time_problem(0, point.time_unix_nano, bounds)
        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        if not reason and not (math.isfinite(value) and value >= 0):
            reason = "with a utilization that is negative or not a number"
        if reason:
            rejected.add(reason)
            continue
        get = point.attributes.get
        state = _first_text(get, semconv.STATE_KEYS)
        if source.busy_states is not None and state is not None and state not in source.busy_states:
            state = ""  # an idle or free state: it still counts the CPU it belongs to
        cpu = _first_text(get, semconv.CPU_KEYS) if source.per_cpu else None
        out.append((series, source, point.time_unix_nano, float(value) * source.scale, state, cpu, subject_id))
    return ignored


def _first_text(get, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = get(key)
        if value is not None:
            return value.string_value or str(value.int_value)
    return None


def _samples(points: list[tuple]) -> list[UtilizationSample]:
    """One sample per series and time: per-state points summed over the busy states,
    per-CPU points averaged over the CPUs."""
    groups: dict[tuple, list] = {}
    for series, source, time_ns, value, state, cpu, subject_id in points:
        group = groups.setdefault((series, time_ns), [source, 0.0, set(), subject_id])
        if state != "":
            group[1] += value
        group[2].add(cpu)
    return [UtilizationSample(series, time_ns, source.measure,
                              total / max(1, len(cpus)) if source.per_cpu else total, subject_id)
            for (series, time_ns), (source, total, cpus, subject_id) in groups.items()]
