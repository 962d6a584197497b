"""Deterministic simulated OTLP traffic with injectable faults and benign noise.

Everything runs in simulated event time: ``TrafficGenerator.batches`` yields
``ExportTraceServiceRequest`` messages, each holding the spans that END within one
interval, with no sleeping and no wall clock. One ``random.Random(seed)`` drives
everything, so the same seed and the same calls give byte-identical output.

Speed: spans are written directly in the protobuf wire format from precomputed byte
templates (attributes, names, resources, exception events) and the batch is parsed
once into the message, which keeps generation well above 100k spans/s.

Requests are generated in 1 s simulated ticks independent of ``interval_s``, so the
span content does not depend on how the caller slices time, only the batching does.
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as _dt
import itertools
import math
import random
import struct
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.testing import topology as topo
from otel_ai.testing.topology import Call, Dependency, Pod, Route

DEFAULT_START_NS = int(_dt.datetime(2026, 2, 15, 14, 0, tzinfo=_dt.timezone.utc).timestamp()) * 1_000_000_000

FAULT_KINDS = (
    "bad_deploy",
    "bad_pod",
    "dependency_errors",
    "dependency_timeouts",
    "slow_database",
    "tenant_failing",
    "route_regression",
    "dependency_down",
)
NOISE_KINDS = ("4xx_burst", "traffic_surge", "low_traffic_flaky", "steady_flaky")

# --- deep-graph faults and realistic noise (deep_topology.py; see the block "deep faults")
# network_delay (target: a service; delay_ms=(lo, hi)): calls into it take longer on the
#   wire, which only its callers' client spans show; cpu_contention (target: a pod;
#   factor): that pod's own work takes factor times longer; slow_leaf (target: a
#   dependency; slow_ms=(lo, hi)): it slows every request behind it; deep_error (service,
#   route; rate): that route fails on its own and its callers answer 5xx up the chain.
DEEP_FAULT_KINDS = ("network_delay", "cpu_contention", "slow_leaf", "deep_error")
# error_bursts / latency_bursts (route; level=(lo, hi), burst_s=(lo, hi), every_s): a
#   route fails 10-30 % (or its own time grows 2-4x) in bursts of 20-90 s every ~5 min;
#   daily_swing (amplitude, peak_hour): all traffic follows the time of day, +-50 %.
REALISTIC_NOISE_KINDS = ("error_bursts", "latency_bursts", "daily_swing")

DEPENDENCY_TYPES = frozenset({"UPSTREAM_DEGRADATION", "CIRCUIT_BREAKER_CANDIDATE"})

# Ground truth keeps only subjects with a clear effect and enough traffic to judge.
GT_MIN_RATE = 1.0  # requests/s
GT_MIN_ERR = 0.05  # added error share
GT_MIN_SLOW = 0.2  # share of requests slowed a lot


@dataclass
class Fault:
    """A fault injected from ``start_s`` (simulated seconds after start).

    service/route pick the place (route = "METHOD TEMPLATE", e.g. "POST /api/checkout";
    for gRPC "Charge payments.v1.PaymentService"); target names the bad thing: the
    dependency name, the pod name (bad_pod), the tenant (tenant_failing) or the new
    service.version (bad_deploy, route_regression). Unset fields get defaults; the
    generator keeps the resolved copies in ``TrafficGenerator.faults``.
    params: rate (failure share), duration_s (fault ends), routes (bad_deploy subset),
    step_s (bad_deploy rollout step), timeout_s, slow_ms=(lo, hi), extra_ms.
    """

    kind: str
    start_s: float
    service: str | None = None
    route: str | None = None
    target: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class Noise:
    """Benign behaviour that must page nobody. params: share, factor, per_min, rate."""

    kind: str
    start_s: float = 0.0
    duration_s: float | None = None
    route: str | None = None  # route id "service:METHOD TEMPLATE"
    params: dict = field(default_factory=dict)


@dataclass
class GroundTruth:
    fault: str
    onset_ns: int
    subjects: list[tuple[str, str, str, str]]
    types: set[str]
    top_suspect: tuple[str, str] | None
    # deep faults: the component a root-cause search must name
    # ({kind, service, pod, version, dependency, operation}); None for the shop's faults
    root_cause: dict | None = None


# --------------------------------------------------------------------------- wire format

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_V = [_varint(i) for i in range(16384)]


def _vlen(n: int) -> bytes:
    return _V[n] if n < 16384 else _varint(n)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + _vlen(len(payload)) + payload


def _anyvalue(value) -> bytes:
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    return _ld(b"\x0a", str(value).encode())


def _kv(key: str, value) -> bytes:
    """KeyValue message body."""
    return _ld(b"\x0a", key.encode()) + _ld(b"\x12", _anyvalue(value))


def _attr(key: str, value) -> bytes:
    """A Span.attributes entry (field 9)."""
    return _ld(b"\x4a", _kv(key, value))


def _attrs(pairs) -> bytes:
    return b"".join(_attr(k, v) for k, v in pairs)


_KEY_CACHE: dict[str, bytes] = {}


def _str_attr_fast(keyfield: bytes, value: str) -> bytes:
    """Span attribute with a string value; keyfield = encoded KeyValue.key field."""
    vb = value.encode()
    av = b"\x0a" + _V[len(vb)] + vb
    kv = keyfield + b"\x12" + _V[len(av)] + av
    return b"\x4a" + _V[len(kv)] + kv


def _keyfield(key: str) -> bytes:
    kf = _KEY_CACHE.get(key)
    if kf is None:
        kf = _KEY_CACHE[key] = _ld(b"\x0a", key.encode())
    return kf


_TIMES = struct.Struct("<BQBQ")  # 0x39 start fixed64, 0x41 end fixed64
_Q = struct.Struct("<Q").pack
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = b"\x30\x01", b"\x30\x02", b"\x30\x03"


class _Err:
    """Precomputed status + exception event for one (service, exception)."""

    __slots__ = ("status", "ev_prefix", "ev_rest")

    def __init__(self, exc_type: str, message: str, where: str):
        status = _ld(b"\x12", f"{exc_type}: {message}".encode()) + b"\x18\x02"
        self.status = _ld(b"\x7a", status)
        stack = (
            "Traceback (most recent call last):\n"
            f'  File "/app/{where}/handlers.py", line 88, in handle\n'
            f'  File "/app/{where}/service.py", line 214, in run\n'
            f"{exc_type}: {message}"
        )
        ev_attrs = b"".join(
            _ld(b"\x1a", _kv(k, v))
            for k, v in (("exception.type", exc_type), ("exception.message", message), ("exception.stacktrace", stack))
        )
        rest = _ld(b"\x12", b"exception") + ev_attrs
        self.ev_prefix = b"\x5a" + _vlen(9 + len(rest)) + b"\x09"
        self.ev_rest = rest

    def event(self, t_ns: int) -> bytes:
        return self.ev_prefix + _Q(t_ns) + self.ev_rest


_ERR_CACHE: dict[tuple[str, str, str], _Err] = {}


def _err(exc_type: str, message: str, where: str) -> _Err:
    key = (exc_type, message, where)
    e = _ERR_CACHE.get(key)
    if e is None:
        e = _ERR_CACHE[key] = _Err(exc_type, message, where)
    return e


_STATUS_ERROR_BARE = _ld(b"\x7a", b"\x18\x02")

_BASE_EXC = {
    "python": ("KeyError", "'sku'"),
    "java": ("java.lang.NullPointerException", "Cannot invoke \"Product.getPrice()\" because \"p\" is null"),
    "go": ("runtime.Error", "invalid memory address or nil pointer dereference"),
    "nodejs": ("TypeError", "Cannot read properties of undefined (reading 'id')"),
}
_DEPLOY_EXC = {
    "python": ("AttributeError", "'NoneType' object has no attribute 'currency'"),
    "java": ("java.lang.IllegalStateException", "price list not initialised"),
    "go": ("errors.errorString", "pricing: missing currency"),
    "nodejs": ("TypeError", "order.currency.toUpperCase is not a function"),
}

# Failure kinds a call can return to its caller: (caller http code, caller exception)
_UP_DOWN, _UP_TIMEOUT, _UP_ERRORS, _UP_CALLEE = 1, 2, 3, 4
_UP_CODE = {_UP_DOWN: 503, _UP_TIMEOUT: 504, _UP_ERRORS: 502, _UP_CALLEE: 502}
_UP_EXC = {
    _UP_DOWN: ("UpstreamUnavailableError", "{dep}: connection refused"),
    _UP_TIMEOUT: ("UpstreamTimeoutError", "{dep}: no response within deadline"),
    _UP_ERRORS: ("UpstreamHTTPError", "{dep} answered 503 Service Unavailable"),
    _UP_CALLEE: ("UpstreamHTTPError", "{dep} answered 5xx"),
}
_GRPC_CODE = {200: 0, 400: 3, 404: 5, 429: 8, 500: 13, 502: 13, 503: 14, 504: 4}

_NZ = 4096
_Z = [NormalDist().inv_cdf((i + 0.5) / _NZ) for i in range(_NZ)]

_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:122.0) Gecko/20100101 Firefox/122.0",
    "shop-ios/4.12.0 CFNetwork/1490.0.4",
)
_INTERNAL_UA = {"python": "python-requests/2.31.0", "java": "Java-http-client/17", "go": "grpc-go/1.62.0", "nodejs": "node-fetch/3.3"}


# --------------------------------------------------------------------------- runtime objects

# Default burst levels: the error share, or the factor on own time.
_BURST_LEVELS = {"error_bursts": (0.1, 0.3), "latency_bursts": (2.0, 4.0)}


class _Bursts:
    """When a bursty route is in a burst, and how bad: calm gaps of ~``every_s`` (exponential)
    alternate with bursts of ``burst_s`` = (lo, hi) seconds at a level drawn from ``level``
    = (lo, hi). Its own RNG, so a burst schedule never shifts the rest of the traffic."""

    def __init__(self, seed: str, params: dict, default_level: tuple[float, float]):
        self._rng = random.Random(seed)
        self.every_s = params.get("every_s", 300.0)
        self.burst_s = params.get("burst_s", (20.0, 90.0))
        self.levels = params.get("level", default_level)
        self.start = self.end = self._rng.uniform(0.0, self.every_s)
        self.level = 0.0

    def level_at(self, t: float) -> float:
        while t >= self.end:
            self.start = self.end + self._rng.expovariate(1.0 / self.every_s)
            self.end = self.start + self._rng.uniform(*self.burst_s)
            self.level = self._rng.uniform(*self.levels)
        return self.level if t >= self.start else 0.0


class _DepRT:
    __slots__ = ("dep", "name", "mu", "sigma", "lat_mult", "err_p", "timeout_p", "timeout_ns", "down", "slow")

    def __init__(self, dep: Dependency):
        self.dep = dep
        self.name = dep.name
        self.mu = math.log(dep.median_ms * 1e6)
        self.sigma = dep.sigma
        self.reset()

    def reset(self) -> None:
        self.lat_mult = 1.0
        self.err_p = 0.0
        self.timeout_p = 0.0
        self.timeout_ns = 3_000_000_000
        self.down = False
        self.slow = None


class _CallRT:
    """A compiled call step: static client-span bytes plus what varies."""

    __slots__ = ("p", "dep", "route", "head", "attrs", "url_key", "url_prefix", "url_suffix", "code_attr",
                 "path_prefix", "path_suffix", "name", "up_exc_service", "retries", "resend_count")

    def __init__(self):
        self.retries = 0  # a retry policy of the behaviour block (0: none)
        self.resend_count = False  # its retries carry http.request.resend_count (new semconv callers)
        self.dep = None
        self.route = None
        self.url_key = None
        self.path_prefix = None
        self.url_suffix = ""


class _RouteRT:
    __slots__ = (
        "id", "route", "service", "pods", "semconv", "head", "static", "path_key", "path_prefix", "path_suffix",
        "path_static", "code_attr", "calls", "mu", "sigma", "internal", "wraps", "base_exc", "up_errs", "client_key",
        "direct_rate", "rate", "own_err", "own_exc", "p4xx", "lat_mult", "extra", "ver_err", "pod_err",
        "tenant_err", "grpc", "is_public", "noise_exc", "ph", "choose", "net_delay", "pod_slow",
    )


def _split_template(template: str) -> tuple[str, str | None, str]:
    """'/api/x/{id}/y' -> ('/api/x/', 'id', '/y'); no placeholder -> (t, None, '')."""
    i = template.find("{")
    if i < 0:
        return template, None, ""
    j = template.index("}", i)
    return template[:i], template[i + 1:j], template[j + 1:]


def _id_value(rnd, name: str | None) -> str:
    if name == "slug":
        return f"sku-{int(rnd() * 50000) + 1000}"
    return str(int(rnd() * 900000) + 10000)


# --------------------------------------------------------------------------- generator

class TrafficGenerator:
    def __init__(self, seed: int = 1, start_ns: int = DEFAULT_START_NS, faults=(), noise=(), rate_scale: float = 1.0,
                 topology: str = "shop"):
        self.seed = seed
        self.topology = topo.topology_named(topology)
        self.start_ns = int(start_ns)
        self.rate_scale = rate_scale
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._randbytes = self._rng.randbytes
        self.nodes, self.pods = self.topology.layout(self._rng)
        for plist in self.pods.values():
            for p in plist:
                self._encode_pod(p)
        self.noise = [self._resolve_noise(n) for n in noise]
        self._bursts = {id(n): _Bursts(f"{seed}:{i}:{n.kind}", n.params, _BURST_LEVELS[n.kind])
                        for i, n in enumerate(self.noise) if n.kind in _BURST_LEVELS}
        self.faults = [self._resolve(f) for f in faults]
        self._deps = {d.name: _DepRT(d) for d in self.topology.dependencies}
        self._routes = {rid: self._compile_route(rid, r) for rid, r in self.topology.route_by_id.items()}
        for rt in self._routes.values():
            rt.calls = [self._compile_call(rt, c) for c in rt.route.calls]
        self._pod_events = self._schedule_pod_events()
        self._tenant_pick = [t for t, w in topo.TENANTS for _ in range(round(w * 100))]
        self._tenant_attr = {t: _attr("tenant.id", t) for t, _ in topo.TENANTS}
        self._public_clients = {
            sc: [self._client_attrs(sc, f"{self._rng.randrange(11, 223)}.{self._rng.randrange(256)}."
                                        f"{self._rng.randrange(256)}.{self._rng.randrange(1, 255)}",
                                    _USER_AGENTS[i % len(_USER_AGENTS)]) for i in range(200)]
            for sc in ("new", "old", "grpc")
        }
        self._pending: list[tuple[int, Pod, bytes]] = []
        self._tick = 0  # next 1 s tick to generate
        self._now_ns = self.start_ns
        self.spans_generated = 0
        self._behaviour = _Behaviour(self)
        self.ground_truth: list[GroundTruth] = self._ground_truth()

    # ------------------------------------------------------------------ public

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def serialized_batches(self, duration_s: float, interval_s: float = 1.0) -> Iterator[bytes]:
        """Like ``batches`` but yields the serialized request bytes (no parse)."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        end_ns = self._now_ns + round(duration_s * 1e9)
        step = round(interval_s * 1e9)
        while self._now_ns < end_ns:
            t1 = min(self._now_ns + step, end_ns)
            self._generate_until(t1)
            yield self._flush(t1)
            self._now_ns = t1

    def batches(self, duration_s: float, interval_s: float = 1.0) -> Iterator[ExportTraceServiceRequest]:
        for blob in self.serialized_batches(duration_s, interval_s):
            yield ExportTraceServiceRequest.FromString(blob)

    def pod(self, name: str) -> Pod | None:
        for plist in self.pods.values():
            for p in plist:
                if p.name == name:
                    return p
        return None

    # ------------------------------------------------------------------ setup

    def _encode_pod(self, pod: Pod) -> None:
        svc = self.topology.service_by_name[pod.service]
        res = [
            ("service.name", svc.name),
            ("service.namespace", self.topology.namespace),
            ("service.version", pod.version),
            ("service.instance.id", pod.name),
            ("deployment.environment.name", "production"),
            ("cloud.provider", "aws"),
            ("cloud.region", self.topology.region),
            ("k8s.namespace.name", self.topology.namespace),
            ("k8s.deployment.name", svc.name),
            ("k8s.pod.name", pod.name),
            ("k8s.node.name", pod.node),
            ("host.name", pod.node),
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.language", svc.language),
            ("telemetry.sdk.version", "1.29.0"),
        ]
        resource = b"".join(_ld(b"\x0a", _kv(k, v)) for k, v in res)
        scope = _ld(b"\x0a", svc.scope.encode()) + _ld(b"\x12", b"0.50b0")
        pod.resource = _ld(b"\x0a", resource)  # ResourceSpans.resource
        pod.scope = _ld(b"\x0a", scope)  # ScopeSpans.scope
        pod.client_attrs = {sc: self._client_attrs(sc, pod.ip, _INTERNAL_UA[svc.language]) for sc in ("new", "old", "grpc")}

    @staticmethod
    def _client_attrs(semconv: str, ip: str, ua: str) -> bytes:
        if semconv == "old":
            return _attrs((("http.client_ip", ip), ("http.user_agent", ua)))
        if semconv == "grpc":
            return _attrs((("client.address", ip),))
        return _attrs((("client.address", ip), ("user_agent.original", ua)))

    def _compile_route(self, rid: str, r: Route) -> _RouteRT:
        svc = self.topology.service_by_name[r.service]
        rt = _RouteRT()
        rt.id, rt.route, rt.service, rt.semconv = rid, r, svc, svc.semconv
        rt.pods = self.pods[r.service]
        rt.grpc = svc.semconv == "grpc"
        rt.is_public = svc.public
        rt.mu, rt.sigma = math.log(r.median_ms * 1e6), r.sigma
        rt.internal = None
        rt.wraps = r.internal is not None and r.internal_wraps_calls
        if r.internal:
            rt.internal = (_ld(b"\x2a", r.internal.encode()) + KIND_INTERNAL, _attr("code.function.name", r.internal))
        rt.base_exc = _err(*_BASE_EXC[svc.language], svc.name)
        rt.up_errs = {}
        rt.direct_rate = r.rate
        rt.choose = list(itertools.accumulate(c.p for c in r.calls)) if r.choose_one else None
        if rt.grpc:
            name = f"{r.template}/{r.method}"
            static = (("rpc.system", "grpc"), ("rpc.service", r.template), ("rpc.method", r.method),
                      ("server.address", svc.host), ("server.port", svc.port))
            code_key = "rpc.grpc.status_code"
            rt.code_attr = {c: _attr(code_key, g) for c, g in _GRPC_CODE.items()}
            rt.path_key = None
            rt.path_static = b""
            rt.ph = None
        else:
            name = r.key
            if svc.semconv == "old":
                static = (("http.method", r.method), ("http.route", r.template), ("http.scheme", "https" if svc.public else "http"),
                          ("net.host.name", svc.host), ("net.host.port", svc.port), ("http.flavor", "1.1"))
                code_key, path_key = "http.status_code", "http.target"
            else:
                static = (("http.request.method", r.method), ("http.route", r.template),
                          ("url.scheme", "https" if svc.public else "http"), ("server.address", svc.host),
                          ("server.port", svc.port), ("network.protocol.version", "1.1"))
                code_key, path_key = "http.response.status_code", "url.path"
            rt.code_attr = {c: _attr(code_key, c) for c in _GRPC_CODE}
            rt.path_key = _keyfield(path_key)
            prefix, ph, suffix = _split_template(r.template)
            rt.path_prefix, rt.path_suffix = prefix, suffix
            rt.path_static = _str_attr_fast(rt.path_key, r.template) if ph is None else None
            rt.ph = ph
        rt.head = _ld(b"\x2a", name.encode()) + KIND_SERVER
        rt.static = _attrs(static)
        rt.client_key = svc.semconv
        return rt

    def _compile_call(self, caller: _RouteRT, c: Call) -> _CallRT:
        ct = _CallRT()
        ct.p = 1.0 if caller.choose is not None else c.p  # alternatives are picked in _serve
        old = caller.semconv == "old"
        code_key = "http.status_code" if old else "http.response.status_code"
        if c.target in self._deps:
            dep = self._deps[c.target]
            d = dep.dep
            ct.dep = dep
            if d.kind == "db":
                coll = c.detail
                name = f"{c.op} {d.db_namespace}.{coll}" if coll else c.op
                pairs = [("db.system", d.db_system), ("db.namespace", d.db_namespace), ("db.operation.name", c.op)]
                if coll:
                    pairs.append(("db.collection.name", coll))
                    pairs.append(("db.query.text", f"{c.op} ... {coll} WHERE id = $1" if c.op != "INSERT" else f"INSERT INTO {coll} VALUES ($1, $2, $3)"))
                pairs += [("server.address", d.address), ("server.port", d.port)]
                ct.attrs = _attrs(pairs)
            else:
                name = c.op
                # old-semconv callers emit both generations of the peer address (http/dup style)
                pairs = [("http.method", c.op) if old else ("http.request.method", c.op), ("server.address", d.address)]
                pairs.append(("net.peer.name", d.address) if old else ("server.port", d.port))
                if d.peer_service:
                    pairs.append(("peer.service", d.peer_service))
                ct.attrs = _attrs(pairs)
                ct.url_key = _keyfield("http.url" if old else "url.full")
                prefix, ph, suffix = _split_template(c.detail or "/")
                ct.url_prefix = f"{d.scheme}://{d.address}{prefix}"
                ct.url_suffix = suffix
                ct.path_prefix = ph  # placeholder name or None
                ct.code_attr = {code: _attr(code_key, code) for code in (200, 503)}
            ct.up_exc_service = d.name
        else:
            callee = self._routes[c.target]
            ct.route = callee
            svc = callee.service
            ct.up_exc_service = svc.name
            if callee.grpc:
                name = f"{callee.route.template}/{callee.route.method}"
                ct.attrs = _attrs((("rpc.system", "grpc"), ("rpc.service", callee.route.template),
                                   ("rpc.method", callee.route.method), ("server.address", svc.host),
                                   ("server.port", svc.port), ("peer.service", svc.name)))
                ct.code_attr = callee.code_attr
            else:
                name = callee.route.method
                pairs = [("http.method", callee.route.method) if old else ("http.request.method", callee.route.method),
                         ("net.peer.name", svc.host) if old else ("server.address", svc.host),
                         ("peer.service", svc.name)]
                if not old:
                    pairs.append(("server.port", svc.port))
                ct.attrs = _attrs(pairs)
                ct.url_key = _keyfield("http.url" if old else "url.full")
                ct.url_prefix = f"http://{svc.host}:{svc.port}"
                ct.code_attr = {code: _attr(code_key, code) for code in _GRPC_CODE}
        ct.head = _ld(b"\x2a", name.encode()) + KIND_CLIENT
        return ct

    # ------------------------------------------------------------------ faults

    def _route_ids_of(self, service: str) -> list[str]:
        return [rid for rid, r in self.topology.route_by_id.items() if r.service == service]

    def _resolve(self, f: Fault) -> Fault:
        f = dataclasses.replace(f, params=dict(f.params))
        k = f.kind
        if k in BEHAVIOUR_FAULT_KINDS:
            return _resolve_behaviour_fault(f, self.topology)
        if k in DEEP_FAULT_KINDS:
            return self._resolve_deep(f)
        if k not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r}")
        p = f.params
        if k == "bad_deploy":
            f.service = f.service or "checkout"
            f.target = f.target or topo.bump_version(self.topology.service_by_name[f.service].version)
            if f.route:
                p.setdefault("routes", [f.route])
            p.setdefault("routes", [self.topology.route_by_id[r].key for r in self._route_ids_of(f.service)])
            p.setdefault("rate", 0.35)
            p.setdefault("step_s", 20.0)
        elif k == "bad_pod":
            f.service = f.service or "orders"
            if f.target is None:
                f.target = self.pods[f.service][1].name
            elif self.pod(f.target) is None:
                raise ValueError(f"unknown pod {f.target!r}")
            f.service = self.pod(f.target).service
            p.setdefault("rate", 0.5)
        elif k in ("dependency_errors", "dependency_timeouts", "dependency_down", "slow_database"):
            default = {"dependency_errors": "shipping", "dependency_timeouts": "recommendations",
                       "dependency_down": "inventory", "slow_database": "orders-db"}[k]
            f.target = f.target or default
            if f.target not in self.topology.dependency_by_name:
                raise ValueError(f"unknown dependency {f.target!r}")
            if k == "dependency_errors":
                p.setdefault("rate", 0.4)
            elif k == "dependency_timeouts":
                p.setdefault("rate", 0.7)
                p.setdefault("timeout_s", 3.0)
            elif k == "dependency_down":
                p.setdefault("rate", 1.0)
            else:
                p.setdefault("slow_ms", (400.0, 900.0))
        elif k == "tenant_failing":
            f.service = f.service or "checkout"
            f.route = f.route or "POST /api/cart/items"
            f.target = f.target or "initech"
            p.setdefault("rate", 0.6)
        elif k == "route_regression":
            f.service = f.service or "catalog"
            f.route = f.route or "GET /api/products/{id}/reviews"
            f.target = f.target or topo.bump_version(self.topology.service_by_name[f.service].version)
            p.setdefault("extra_ms", 550.0)
        if f.route is not None and topo.route_id(f.service, f.route) not in self.topology.route_by_id:
            raise ValueError(f"unknown route {f.service}:{f.route}")
        return f

    def _resolve_noise(self, n: Noise) -> Noise:
        n = dataclasses.replace(n, params=dict(n.params))
        if n.kind in BEHAVIOUR_NOISE_KINDS:
            return _resolve_behaviour_noise(n, self.topology)
        if n.kind not in NOISE_KINDS + REALISTIC_NOISE_KINDS:
            raise ValueError(f"unknown noise kind {n.kind!r}")
        if n.kind in ("error_bursts", "latency_bursts") and n.route is None:
            raise ValueError(f"{n.kind} needs a route id ('service:METHOD TEMPLATE')")
        if n.kind == "4xx_burst":
            n.route = n.route or "checkout:POST /api/cart/items"
            n.duration_s = 120.0 if n.duration_s is None else n.duration_s
        elif n.kind == "traffic_surge":
            n.duration_s = 180.0 if n.duration_s is None else n.duration_s
        elif n.kind == "low_traffic_flaky":
            n.route = n.route or "orders:POST /api/orders/export"
        elif n.kind == "steady_flaky":
            n.route = n.route or "catalog:GET /api/categories"
        if n.route is not None and n.route not in self.topology.route_by_id:
            raise ValueError(f"unknown route id {n.route!r} (want 'service:METHOD TEMPLATE')")
        return n

    def _active(self, start_s: float, duration_s, t: float) -> bool:
        return t >= start_s and (duration_s is None or t < start_s + duration_s)

    def _schedule_pod_events(self) -> list[tuple[float, str, int, str]]:
        ev = []
        for f in self.faults:
            if f.kind == "bad_deploy":
                for i in range(len(self.pods[f.service])):
                    ev.append((f.start_s + i * f.params["step_s"], f.service, i, f.target))
            elif f.kind == "route_regression":
                for i in range(len(self.pods[f.service])):
                    ev.append((f.start_s, f.service, i, f.target))
        ev.sort(key=lambda e: e[0])
        self._rs_hash = {}
        return ev

    def _apply_pod_events(self, t: float) -> None:
        ev = self._pod_events
        while ev and ev[0][0] <= t:
            _, svc, slot, version = ev.pop(0)
            rs = self._rs_hash.get((svc, version))
            if rs is None:
                rs = self._rs_hash[(svc, version)] = "".join(self._rng.choice("0123456789abcdef") for _ in range(9))
            plist = self.pods[svc]
            old = plist[slot]
            pod = topo.new_pod(self._rng, svc, version, rs, old.node, slot)
            self._encode_pod(pod)
            plist[slot] = pod  # same list object the routes hold

    def _update_state(self, t: float) -> float:
        """Set every route's and dependency's behaviour for the tick starting at t; returns rate factor."""
        rate_factor = self.rate_scale
        lat = 1.0
        for d in self._deps.values():
            d.reset()
        for rt in self._routes.values():
            r = rt.route
            rt.rate = rt.direct_rate
            rt.own_err = r.base_err
            rt.own_exc = rt.base_exc
            rt.noise_exc = None
            rt.p4xx = r.not_found
            rt.extra = None
            rt.ver_err = rt.pod_err = rt.tenant_err = None
            rt.net_delay = rt.pod_slow = None
        for n in self.noise:
            if not self._active(n.start_s, n.duration_s, t) or n.kind in REALISTIC_NOISE_KINDS + BEHAVIOUR_NOISE_KINDS:
                continue
            if n.kind == "traffic_surge":
                rate_factor *= n.params.get("factor", 5.0)
                lat *= n.params.get("latency", 1.15)
                continue
            rt = self._routes[n.route]
            if n.kind == "4xx_burst":
                rt.p4xx = n.params.get("share", 0.4)
            elif n.kind in ("low_traffic_flaky", "steady_flaky"):
                if n.kind == "low_traffic_flaky":
                    rt.rate = n.params.get("per_min", 3.0) / 60.0 / (self.rate_scale or 1.0)
                rt.own_err = n.params.get("rate", 0.2 if n.kind == "low_traffic_flaky" else 0.05)
                rt.own_exc = _err("ConnectionResetError", "[Errno 104] Connection reset by peer", rt.service.name)
        for rt in self._routes.values():
            rt.lat_mult = lat
        for d in self._deps.values():
            d.lat_mult = lat
        rate_factor = self._apply_realistic_noise(t, rate_factor)
        for f in self.faults:
            if not self._active(f.start_s, f.params.get("duration_s"), t) or f.kind in BEHAVIOUR_FAULT_KINDS:
                continue
            k, p = f.kind, f.params
            if k in DEEP_FAULT_KINDS:
                self._apply_deep_fault(f)
                continue
            if k == "bad_deploy":
                lang = self.topology.service_by_name[f.service].language
                for key in p["routes"]:
                    rt = self._routes[topo.route_id(f.service, key)]
                    rt.ver_err = ({f.target: p["rate"]}, _err(*_DEPLOY_EXC[lang], f.service))
            elif k == "bad_pod":
                for rid in self._route_ids_of(f.service):
                    self._routes[rid].pod_err = ({f.target: p["rate"]}, _err("OSError", "[Errno 24] Too many open files", f.service))
            elif k == "tenant_failing":
                rt = self._routes[topo.route_id(f.service, f.route)]
                rt.tenant_err = ({f.target: p["rate"]}, _err("QuotaConfigError", f"invalid quota configuration for tenant {f.target}", f.service))
            elif k == "route_regression":
                rt = self._routes[topo.route_id(f.service, f.route)]
                rt.extra = (math.log(p["extra_ms"] * 1e6), 0.25)
            else:
                d = self._deps[f.target]
                if k == "dependency_errors":
                    d.err_p = p["rate"]
                elif k == "dependency_timeouts":
                    d.timeout_p = p["rate"]
                    d.timeout_ns = int(p["timeout_s"] * 1e9)
                elif k == "dependency_down":
                    d.down = True
                elif k == "slow_database":
                    lo, hi = p["slow_ms"]
                    d.slow = (lo * 1e6, (hi - lo) * 1e6)
        self._behaviour.update(t)
        return rate_factor

    # ------------------------------------------------------------------ deep faults and realistic noise

    def _resolve_deep(self, f: Fault) -> Fault:
        k, p = f.kind, f.params
        if k == "network_delay":
            f.target = f.target or "timetable-service"
            f.service = f.target
            p.setdefault("delay_ms", (150.0, 250.0))
        elif k == "cpu_contention":
            if f.target is None:
                f.service = f.service or "fraud-service"
                if f.service not in self.pods:
                    raise ValueError(f"unknown service {f.service!r}")
                f.target = self.pods[f.service][0].name
            if self.pod(f.target) is None:
                raise ValueError(f"unknown pod {f.target!r}")
            f.service = self.pod(f.target).service
            p.setdefault("factor", 30.0)
        elif k == "slow_leaf":
            f.target = f.target or "config-db"
            if f.target not in self.topology.dependency_by_name:
                raise ValueError(f"unknown dependency {f.target!r}")
            p.setdefault("slow_ms", (400.0, 900.0))
        else:  # deep_error
            f.service = f.service or "auth-service"
            f.route = f.route or ("Verify rail.auth.v1.AuthService" if f.service == "auth-service" else None)
            p.setdefault("rate", 0.3)
            if f.route is None:
                raise ValueError("deep_error needs a route")
        if f.service is not None and f.service not in self.topology.service_by_name:
            raise ValueError(f"unknown service {f.service!r}")
        if f.route is not None and topo.route_id(f.service, f.route) not in self.topology.route_by_id:
            raise ValueError(f"unknown route {f.service}:{f.route}")
        return f

    def _apply_deep_fault(self, f: Fault) -> None:
        k, p = f.kind, f.params
        if k == "network_delay":
            lo, hi = p["delay_ms"]
            for rid in self._route_ids_of(f.target):
                self._routes[rid].net_delay = (int(lo * 1e6), int((hi - lo) * 1e6))
        elif k == "cpu_contention":
            for rid in self._route_ids_of(f.service):
                self._routes[rid].pod_slow = {f.target: p["factor"]}
        elif k == "slow_leaf":
            lo, hi = p["slow_ms"]
            self._deps[f.target].slow = (lo * 1e6, (hi - lo) * 1e6)
        else:  # deep_error
            rt = self._routes[topo.route_id(f.service, f.route)]
            rt.own_err = p["rate"]
            rt.own_exc = _err("IllegalStateError", "token signing key not loaded", f.service)

    def _apply_realistic_noise(self, t: float, rate_factor: float) -> float:
        for n in self.noise:
            if n.kind not in REALISTIC_NOISE_KINDS or not self._active(n.start_s, n.duration_s, t):
                continue
            if n.kind == "daily_swing":
                hour = ((self.start_ns / 1e9 + t) % 86_400) / 3600.0
                amplitude, peak = n.params.get("amplitude", 0.5), n.params.get("peak_hour", 13.0)
                rate_factor *= 1.0 + amplitude * math.cos(2 * math.pi * (hour - peak) / 24.0)
                continue
            level = self._bursts[id(n)].level_at(t)
            if not level:
                continue
            rt = self._routes[n.route]
            if n.kind == "error_bursts":
                rt.own_err = max(rt.own_err, level)
                rt.own_exc = _err("TimeoutError", "upstream connection pool exhausted", rt.service.name)
            else:
                rt.lat_mult *= level
        return rate_factor

    def _deep_fault_effects(self, f: Fault) -> tuple[dict, dict, dict]:
        """Like _fault_effects, plus per callee service what its callers see on the wire."""
        own, dep, inbound = {}, {}, {}
        k, p = f.kind, f.params
        if k == "network_delay":
            inbound[f.target] = (0.0, 1.0)
        elif k == "cpu_contention":
            for rid in self._route_ids_of(f.service):
                own[rid] = (0.0, 1.0 / len(self.pods[f.service]))
        elif k == "slow_leaf":
            dep[f.target] = (0.0, 1.0)
        else:
            own[topo.route_id(f.service, f.route)] = (p["rate"], 0.0)
        return own, dep, inbound

    def _deep_root_cause(self, f: Fault) -> dict:
        root = {"kind": "", "service": None, "pod": None, "version": None, "dependency": None, "operation": None}
        if f.kind == "network_delay":
            root.update(kind="network", service=f.target)
        elif f.kind == "cpu_contention":
            root.update(kind="pod", service=f.service, pod=f.target, version=self.pod(f.target).version)
        elif f.kind == "slow_leaf":
            root.update(kind="dependency", dependency=f.target)
        else:
            root.update(kind="service", service=f.service, operation=f.route)
        return root

    # ------------------------------------------------------------------ generation

    def _generate_until(self, t1_ns: int) -> None:
        rnd = self._random
        while self.start_ns + self._tick * 1_000_000_000 < t1_ns:
            t = float(self._tick)
            self._apply_pod_events(t)
            factor = self._update_state(t)
            base = self.start_ns + self._tick * 1_000_000_000
            pick = self._tenant_pick
            ntp = len(pick)
            for rt in self._routes.values():
                lam = rt.rate * factor
                if lam <= 0.0:
                    continue
                n = self._poisson(lam)
                clients = self._public_clients[rt.semconv]
                for _ in range(n):
                    start = base + int(rnd() * 1e9)
                    tenant = pick[int(rnd() * ntp)]
                    self._serve(rt, start, self._randbytes(16), None, tenant, clients[int(rnd() * 200)], None)
            self._behaviour.generate(base, t)
            self._tick += 1

    def _poisson(self, lam: float) -> int:
        rnd = self._random
        if lam > 30.0:
            n = int(lam + math.sqrt(lam) * _Z[int(rnd() * _NZ)] + 0.5)
            return n if n > 0 else 0
        limit = math.exp(-lam)
        n = 0
        prod = rnd()
        while prod > limit:
            n += 1
            prod *= rnd()
        return n

    def _serve(self, rt: _RouteRT, start: int, trace_id: bytes, parent: bytes | None, tenant: str,
               client_attr: bytes, path: str | None, answer: int = 0, more_attrs: bytes = b"") -> tuple[int, int]:
        """Simulate one server request and its subtree; returns (end_ns, status code).
        answer: a 4xx code to refuse it with (rate limit, failed login); more_attrs: encoded
        span attributes to add (e.g. enduser.id)."""
        rnd = self._random
        pods = rt.pods
        pod = pods[int(rnd() * len(pods))]
        span_id = self._randbytes(8)
        own = math.exp(rt.mu + rt.sigma * _Z[int(rnd() * _NZ)]) * rt.lat_mult
        if rt.extra is not None:
            own += math.exp(rt.extra[0] + rt.extra[1] * _Z[int(rnd() * _NZ)])
        if rt.pod_slow is not None:
            own *= rt.pod_slow.get(pod.name, 1.0)
        err = None
        extra_spans = None
        p4 = rt.p4xx
        if answer:
            code = answer
            end = start + int(own * 0.3) + 1000
        elif p4 and rnd() < p4:
            code = (400, 404, 429)[int(rnd() * 3)] if p4 > rt.route.not_found else 404
            end = start + int(own * 0.3) + 1000
        else:
            if rnd() < rt.own_err:
                err = rt.own_exc
            if err is None and rt.ver_err is not None:
                pv = rt.ver_err[0].get(pod.version)
                if pv and rnd() < pv:
                    err = rt.ver_err[1]
            if err is None and rt.pod_err is not None:
                pv = rt.pod_err[0].get(pod.name)
                if pv and rnd() < pv:
                    err = rt.pod_err[1]
            if err is None and rt.tenant_err is not None:
                pv = rt.tenant_err[0].get(tenant)
                if pv and rnd() < pv:
                    err = rt.tenant_err[1]
            code = 500 if err is not None else 200
            cursor = start + int(own * 0.4) + 20_000
            calls = rt.calls
            if rt.choose is not None:
                calls = (calls[min(bisect.bisect_right(rt.choose, rnd() * rt.choose[-1]), len(calls) - 1)],)
            caller = span_id
            if rt.wraps:  # an id of its own without a draw, so the random stream stays the same
                caller, wrap_start = bytes(b ^ 0x5A for b in span_id), cursor
            for c in calls:
                if c.p < 1.0 and rnd() >= c.p:
                    continue
                cursor += 40_000
                if c.route is not None:
                    cursor, up = self._call_route(c, cursor, trace_id, caller, tenant, pod)
                elif c.retries:
                    cursor, up = self._behaviour.retrying_call(c, cursor, trace_id, caller, pod)
                else:
                    cursor, up = self._call_dep(c, cursor, trace_id, caller, pod)
                if up:
                    if up >= 400 and up < 500:  # callee said 4xx: answer the same, benign
                        code = up
                        err = None
                    else:
                        code = _UP_CODE[up]
                        err = rt.up_errs.get((up, c.up_exc_service))
                        if err is None:
                            et, em = _UP_EXC[up]
                            err = rt.up_errs[(up, c.up_exc_service)] = _err(et, em.format(dep=c.up_exc_service), rt.service.name)
                    break
            post = int(own * 0.6) + 20_000
            if rt.wraps:
                extra_spans = (cursor + 10_000, b"\x0a\x10" + trace_id + b"\x12\x08" + caller + b"\x22\x08" + span_id
                               + rt.internal[0] + _TIMES.pack(0x39, wrap_start, 0x41, cursor + 10_000) + rt.internal[1]
                               + (_STATUS_ERROR_BARE if code >= 500 else b""))
            if code != 200:
                post = post // 5 + 10_000
            elif rt.internal is not None and not rt.wraps:
                i_start = cursor + post // 10
                i_end = i_start + post * 7 // 10
                extra_spans = (i_end, b"\x0a\x10" + trace_id + b"\x12\x08" + self._randbytes(8) + b"\x22\x08" + span_id
                               + rt.internal[0] + _TIMES.pack(0x39, i_start, 0x41, i_end) + rt.internal[1])
            end = cursor + post
        # --- encode the server span
        if rt.path_static is not None:
            path_attr = rt.path_static
        else:
            if path is None:
                path = rt.path_prefix + _id_value(rnd, rt.ph) + rt.path_suffix
            path_attr = _str_attr_fast(rt.path_key, path)
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
        if parent is not None:
            parts.append(b"\x22\x08")
            parts.append(parent)
        parts += (rt.head, _TIMES.pack(0x39, start, 0x41, end), rt.static, path_attr, rt.code_attr[code],
                  client_attr, self._tenant_attr[tenant], more_attrs)
        if err is not None:
            parts.append(err.event(end - 5_000))
            parts.append(err.status)
        elif code >= 500:
            parts.append(_STATUS_ERROR_BARE)
        body = b"".join(parts)
        pend = self._pending
        pend.append((end, pod, b"\x12" + _vlen(len(body)) + body))
        if extra_spans is not None:
            pend.append((extra_spans[0], pod, b"\x12" + _V[len(extra_spans[1])] + extra_spans[1]))
            self.spans_generated += 2
        else:
            self.spans_generated += 1
        return end, code

    def _call_route(self, c: _CallRT, start: int, trace_id: bytes, parent: bytes, tenant: str, pod: Pod) -> tuple[int, int]:
        rnd = self._random
        span_id = self._randbytes(8)
        callee = c.route
        path = None
        url_attr = b""
        if not callee.grpc:
            if callee.path_static is None:
                path = callee.path_prefix + _id_value(rnd, callee.ph) + callee.path_suffix
            else:
                path = callee.route.template
            url_attr = _str_attr_fast(c.url_key, c.url_prefix + path)
        net = 150_000 + int(rnd() * 400_000)
        delay = 0 if callee.net_delay is None else callee.net_delay[0] + int(rnd() * callee.net_delay[1])
        cend, code = self._serve(callee, start + net + delay, trace_id, span_id, tenant, pod.client_attrs[callee.semconv], path)
        end = cend + net
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id, b"\x22\x08", parent, c.head,
                 _TIMES.pack(0x39, start, 0x41, end), c.attrs, url_attr, c.code_attr[code]]
        up = 0
        if code >= 500:
            parts.append(_STATUS_ERROR_BARE)
            up = _UP_CALLEE
        elif code >= 400:
            up = code
        body = b"".join(parts)
        self._pending.append((end, pod, b"\x12" + _vlen(len(body)) + body))
        self.spans_generated += 1
        return end, up

    def _call_dep(self, c: _CallRT, start: int, trace_id: bytes, parent: bytes, pod: Pod,
                  more_attrs: bytes = b"") -> tuple[int, int]:
        rnd = self._random
        d = c.dep
        up = 0
        err = None
        code = 200
        if d.down:
            dur = 400_000 + int(rnd() * 1_500_000)
            up = _UP_DOWN
            err = _err("ConnectionRefusedError", f"[Errno 111] Connection refused ({d.dep.address}:{d.dep.port})", pod.service)
        elif d.timeout_p and rnd() < d.timeout_p:
            dur = d.timeout_ns + int(rnd() * 20_000_000)
            up = _UP_TIMEOUT
            err = _err("TimeoutError", f"timed out after {d.timeout_ns / 1e9:g}s waiting for {d.dep.address}", pod.service)
        else:
            dur = int(math.exp(d.mu + d.sigma * _Z[int(rnd() * _NZ)]) * d.lat_mult)
            if d.err_p and rnd() < d.err_p:
                code = 503
                up = _UP_ERRORS
            elif d.slow is not None:
                dur = int(d.slow[0] + rnd() * d.slow[1])
        end = start + dur
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", self._randbytes(8), b"\x22\x08", parent, c.head,
                 _TIMES.pack(0x39, start, 0x41, end), c.attrs, more_attrs]
        if c.url_key is not None:
            url = c.url_prefix if c.path_prefix is None else c.url_prefix + _id_value(rnd, c.path_prefix)
            parts.append(_str_attr_fast(c.url_key, url + c.url_suffix))
            if err is None:
                parts.append(c.code_attr[code])
        if err is not None:
            parts.append(err.event(end))
            parts.append(err.status)
        elif up:
            parts.append(_STATUS_ERROR_BARE)
        body = b"".join(parts)
        self._pending.append((end, pod, b"\x12" + _vlen(len(body)) + body))
        self.spans_generated += 1
        return end, up

    def _flush(self, t1_ns: int) -> bytes:
        groups: dict[Pod, list[bytes]] = {}
        keep = []
        for item in self._pending:
            if item[0] < t1_ns:
                g = groups.get(item[1])
                if g is None:
                    groups[item[1]] = [item[2]]
                else:
                    g.append(item[2])
            else:
                keep.append(item)
        self._pending = keep
        out = []
        for pod, chunks in groups.items():
            ss = pod.scope + b"".join(chunks)
            rs = pod.resource + b"\x12" + _vlen(len(ss)) + ss
            out.append(b"\x0a" + _vlen(len(rs)) + rs)
        return b"".join(out)

    # ------------------------------------------------------------------ ground truth

    def _fault_effects(self, f: Fault) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
        """Own (err, slow) shares the fault adds, per route id and per leaf dependency."""
        own: dict[str, tuple[float, float]] = {}
        dep: dict[str, tuple[float, float]] = {}
        k, p = f.kind, f.params
        if k == "bad_deploy":
            for key in p["routes"]:
                own[topo.route_id(f.service, key)] = (p["rate"], 0.0)
        elif k == "bad_pod":
            n = len(self.pods[f.service])
            for rid in self._route_ids_of(f.service):
                own[rid] = (p["rate"] / n, 0.0)
        elif k == "tenant_failing":
            own[topo.route_id(f.service, f.route)] = (p["rate"] * topo.TENANT_WEIGHT.get(f.target, 0.0), 0.0)
        elif k == "route_regression":
            own[topo.route_id(f.service, f.route)] = (0.0, 1.0)
        elif k == "slow_database":
            dep[f.target] = (0.0, 1.0)
        elif k == "dependency_timeouts":
            dep[f.target] = (p["rate"], p["rate"])
        else:
            dep[f.target] = (p["rate"], 0.0)
        return own, dep

    def _ground_truth(self) -> list[GroundTruth]:
        direct = {rid: r.rate * self.rate_scale for rid, r in self.topology.route_by_id.items()}
        for n in self.noise:
            if n.kind == "low_traffic_flaky":
                direct[n.route] = n.params.get("per_min", 3.0) / 60.0
        rates = self.topology.effective_rates(direct)
        out: list[GroundTruth] = self._behaviour.ground_truth()
        routes = self.topology.route_by_id
        for f in self.faults:
            if f.kind in BEHAVIOUR_FAULT_KINDS:
                continue
            if f.kind in DEEP_FAULT_KINDS:
                own, dep, inbound = self._deep_fault_effects(f)
            else:
                (own, dep), inbound = self._fault_effects(f), {}
            memo: dict[str, tuple[float, float]] = {}

            def seen(c: Call) -> tuple[float, float]:
                """(err, slow) of a call as its caller sees it."""
                if c.target not in routes:
                    return dep.get(c.target, (0.0, 0.0))
                (e, s), (we, ws) = node(c.target), inbound.get(routes[c.target].service, (0.0, 0.0))
                return 1.0 - (1.0 - e) * (1.0 - we), 1.0 - (1.0 - s) * (1.0 - ws)

            def node(rid: str) -> tuple[float, float]:
                if rid not in memo:
                    ok_e, ok_s = 1.0 - own.get(rid, (0.0, 0.0))[0], 1.0 - own.get(rid, (0.0, 0.0))[1]
                    for c in self.topology.route_by_id[rid].calls:
                        e, s = seen(c)
                        ok_e *= 1.0 - c.p * e
                        ok_s *= 1.0 - c.p * s
                    memo[rid] = (1.0 - ok_e, 1.0 - ok_s)
                return memo[rid]

            by_types: dict[frozenset, list] = {}
            dep_seen: dict[str, list[float]] = {}  # name -> [rate, err*rate, slow*rate]
            for rid, r in self.topology.route_by_id.items():
                e, s = node(rid)
                for c in r.calls:
                    name = topo.call_dependency_name(c)
                    ce, cs = seen(c)
                    acc = dep_seen.setdefault(name, [0.0, 0.0, 0.0])
                    cr = rates[rid] * c.p
                    acc[0] += cr
                    acc[1] += cr * ce
                    acc[2] += cr * cs
                if rates[rid] < GT_MIN_RATE:
                    continue
                types = set()
                if e >= GT_MIN_ERR:
                    types.add("ERROR_RATE_SPIKE")
                    if f.kind == "dependency_down":
                        types.add("CIRCUIT_BREAKER_CANDIDATE")
                if s >= GT_MIN_SLOW:
                    types.add("LATENCY_ANOMALY")
                if types:
                    by_types.setdefault(frozenset(types), []).append(topo.subject_of(r))
            onset = self.start_ns + int(round(f.start_s * 1e9))
            top = {
                "bad_deploy": ("service.version", f.target),
                "bad_pod": ("k8s.pod.name", f.target),
                "dependency_errors": ("dependency.failed", f.target),
                "dependency_timeouts": ("dependency.failed", f.target),
                "dependency_down": ("dependency.failed", f.target),
                "slow_database": ("dependency.slow", f.target),
                "tenant_failing": ("tenant.id", f.target),
                "route_regression": ("service.version", f.target),
            }.get(f.kind)
            root = self._deep_root_cause(f) if f.kind in DEEP_FAULT_KINDS else None
            for types, subjects in by_types.items():
                out.append(GroundTruth(f.kind, onset, sorted(subjects), set(types), top, root))
            for name, (rate, er, sr) in dep_seen.items():
                if rate >= GT_MIN_RATE and (er / rate >= GT_MIN_ERR or sr / rate >= GT_MIN_SLOW):
                    out.append(GroundTruth(f.kind, onset, [("dependency", name, "", "")], set(DEPENDENCY_TYPES), None, root))
        return out


# =========================================================================== behaviour faults
# Faults for the detectors of client and caller behaviour (RATE_LIMIT_BREACH, RETRY_STORM,
# SECURITY_ANOMALY, CAPACITY_WARNING) and the benign look-alikes each must stay quiet on.
# Kept apart from the shop's own faults: they add traffic (a tenant's job, an attacker, a
# login route) and behaviour (retry policies, queueing), and leave the default topology,
# the other faults and the random stream of scenarios without them unchanged.
#
# Faults (Fault.kind):
#   rate_limit_breach    service/route, target tenant: a job of the tenant sends
#                        params extra_rate req/s over its quota; params rejected of them get 429
#   retry_storm          service (the caller), target dependency: params timeout_share of
#                        calls time out after timeout_ms and the caller retries each up to
#                        params retries times, without backoff
#   credential_stuffing  one client (params address, user_agent) tries params rate logins/s
#                        with other people's user names on POST /login; params success share works
#   capacity_saturation  service/route, target tenant: the tenant adds params load x the
#                        route's rate at onset, growing by params ramp_per_min x per minute; the
#                        route queues (usual utilization params utilization)
# Look-alikes (Noise.kind):
#   rate_limited_bursts  a tenant with a low limit bursts params extra_rate req/s for
#                        params burst_s every params every_s; all of the burst gets 429
#   normal_retries       params share of calls to a dependency fail once and are retried
#   login_failures       POST /login with its usual failed-password rate (params share of
#                        logins start with 1-3 failed attempts)

BEHAVIOUR_FAULT_KINDS = ("rate_limit_breach", "retry_storm", "credential_stuffing", "capacity_saturation")
BEHAVIOUR_NOISE_KINDS = ("rate_limited_bursts", "normal_retries", "login_failures")
LOGIN_ROUTE = Route("frontend", "POST", "/login", 4.0, 25.0, 0.4, calls=(Call("session-cache", 1.0, "SET"),))
LOGIN_ROUTE_ID = topo.route_id(LOGIN_ROUTE.service, LOGIN_ROUTE.key)
_USERS = 5000  # distinct enduser.id values of the shop's customers
_BEHAVIOUR_DEFAULTS = {
    "rate_limit_breach": ("orders", "GET /api/orders", "initech", {"extra_rate": 8.0, "rejected": 0.9}),
    "retry_storm": ("orders", None, "shipping", {"timeout_share": 0.9, "timeout_ms": 200.0, "retries": 5}),
    "credential_stuffing": ("frontend", "POST /login", None,
                            {"rate": 20.0, "success": 0.01, "address": "203.0.113.77", "user_agent": "Go-http-client/1.1"}),
    "capacity_saturation": ("checkout", "GET /api/cart", "globex",
                            {"load": 2.5, "ramp_per_min": 0.25, "utilization": 0.2}),
}
_LOOKALIKE_DEFAULTS = {
    "rate_limited_bursts": ("orders:GET /api/orders", {"tenant": "hooli", "extra_rate": 6.0, "burst_s": 20.0,
                                                       "every_s": 240.0}),
    "normal_retries": (None, {"dependency": "payment-gateway", "share": 0.03}),
    "login_failures": (LOGIN_ROUTE_ID, {"share": 0.06, "rate": LOGIN_ROUTE.rate}),
}


def _resolve_behaviour_fault(f: Fault, topology: topo.Topology) -> Fault:
    if topology is not topo.SHOP:
        raise ValueError(f"{f.kind} runs on the shop topology")
    service, route, target, params = _BEHAVIOUR_DEFAULTS[f.kind]
    f.service, f.route, f.target = f.service or service, f.route or route, f.target or target
    for key, value in params.items():
        f.params.setdefault(key, value)
    if f.kind == "retry_storm":
        if f.target not in topo.DEPENDENCY_BY_NAME:
            raise ValueError(f"unknown dependency {f.target!r}")
        if not any(c.target == f.target for r in topo.ROUTES if r.service == f.service for c in r.calls):
            raise ValueError(f"{f.service} never calls {f.target}")
    elif f.kind != "credential_stuffing" and topo.route_id(f.service, f.route) not in topo.ROUTE_BY_ID:
        raise ValueError(f"unknown route {f.service}:{f.route}")
    return f


def _resolve_behaviour_noise(n: Noise, topology: topo.Topology) -> Noise:
    if topology is not topo.SHOP:
        raise ValueError(f"{n.kind} runs on the shop topology")
    route, params = _LOOKALIKE_DEFAULTS[n.kind]
    n.route = n.route or route
    for key, value in params.items():
        n.params.setdefault(key, value)
    if n.route is not None and n.route not in topo.ROUTE_BY_ID and n.route != LOGIN_ROUTE_ID:
        raise ValueError(f"unknown route id {n.route!r} (want 'service:METHOD TEMPLATE')")
    return n


class _Behaviour:
    """The behaviour faults and look-alikes of one generator: the traffic they add each
    tick, the retry policies they switch on, and their ground truth. Without any, it
    does nothing and draws nothing from the random stream."""

    def __init__(self, gen: TrafficGenerator):
        self.gen = gen
        self.faults = [f for f in gen.faults if f.kind in BEHAVIOUR_FAULT_KINDS]
        self.noise = [n for n in gen.noise if n.kind in BEHAVIOUR_NOISE_KINDS]
        self.login = None
        kinds = {x.kind for x in (*self.faults, *self.noise)}
        if kinds & {"credential_stuffing", "login_failures"}:
            self.login = gen._compile_route(LOGIN_ROUTE_ID, LOGIN_ROUTE)
            self.login.calls = [gen._compile_call(self.login, c) for c in LOGIN_ROUTE.calls]
            self.login.code_attr[401] = _attr("http.response.status_code", 401)
            # A route of the generator like the others (its state is set every tick), but its
            # requests come from generate(), which knows who logs in.
            self.login.direct_rate = 0.0
            gen._routes[LOGIN_ROUTE_ID] = self.login
            self._user_key = _keyfield("enduser.id")
        self._attackers = {id(f): gen._client_attrs("new", f.params["address"], f.params["user_agent"])
                           for f in self.faults if f.kind == "credential_stuffing"}
        self._resend = [_attr("http.request.resend_count", i) for i in range(16)]

    def _on(self, item, t: float) -> bool:
        duration = item.params.get("duration_s") if isinstance(item, Fault) else item.duration_s
        return self.gen._active(item.start_s, duration, t)

    # ---- per tick: state, then traffic

    def update(self, t: float) -> None:
        """Retry policies and queueing for the tick starting at t (after the shop's state)."""
        if not (self.faults or self.noise):
            return
        gen = self.gen
        self._retry(None, None, 0)
        for n in self.noise:
            if n.kind == "normal_retries" and self._on(n, t):
                gen._deps[n.params["dependency"]].err_p = n.params["share"]
                self._retry(None, n.params["dependency"], 1)
        for f in self.faults:
            if not self._on(f, t):
                continue
            p = f.params
            if f.kind == "retry_storm":
                dep = gen._deps[f.target]
                dep.timeout_p, dep.timeout_ns = p["timeout_share"], int(p["timeout_ms"] * 1e6)
                self._retry(f.service, f.target, p["retries"])
            elif f.kind == "capacity_saturation":
                rt = gen._routes[topo.route_id(f.service, f.route)]
                u0 = p["utilization"]
                load = 1.0 + self._extra_load(f, t)
                rt.lat_mult *= (1.0 - u0) / max(1.0 - min(u0 * load, 0.97), 0.03)

    def _retry(self, caller: str | None, dependency: str | None, retries: int) -> None:
        """Set the retry policy of the calls from `caller` (None: any) to `dependency` (None: any)."""
        for rt in self.gen._routes.values():
            if caller is None or rt.service.name == caller:
                for c in rt.calls:
                    if c.dep is not None and dependency in (None, c.dep.name):
                        c.retries = retries
                        c.resend_count = rt.semconv != "old"

    @staticmethod
    def _extra_load(f: Fault, t: float) -> float:
        """The tenant's added traffic, as a multiple of the route's own rate."""
        return f.params["load"] + f.params["ramp_per_min"] * (t - f.start_s) / 60.0

    def generate(self, base: int, t: float) -> None:
        """The tick's extra requests, after the shop's own."""
        gen = self.gen
        scale = gen.rate_scale
        if self.login is not None:
            share = next((n.params["share"] for n in self.noise if n.kind == "login_failures"), 0.05)
            rate = next((n.params["rate"] for n in self.noise if n.kind == "login_failures"), LOGIN_ROUTE.rate)
            for _ in range(gen._poisson(rate * scale)):
                self._user_login(base, share)
        for n in self.noise:
            if n.kind == "rate_limited_bursts" and self._on(n, t) and (t - n.start_s) % n.params["every_s"] < n.params["burst_s"]:
                self._tenant_requests(gen._routes[n.route], base, n.params["tenant"], n.params["extra_rate"] * scale, 1.0)
        for f in self.faults:
            if not self._on(f, t):
                continue
            p = f.params
            if f.kind == "rate_limit_breach":
                self._tenant_requests(gen._routes[topo.route_id(f.service, f.route)], base, f.target,
                                      p["extra_rate"] * scale, p["rejected"])
            elif f.kind == "capacity_saturation":
                rt = gen._routes[topo.route_id(f.service, f.route)]
                self._tenant_requests(rt, base, f.target, rt.direct_rate * self._extra_load(f, t) * scale, 0.0)
            elif f.kind == "credential_stuffing":
                for _ in range(gen._poisson(p["rate"] * scale)):
                    answer = 0 if gen._random() < p["success"] else 401
                    self._login(base + int(gen._random() * 1e9), self._attackers[id(f)], self._stranger(), answer)

    def _tenant_requests(self, rt: _RouteRT, base: int, tenant: str, rate: float, refused: float) -> None:
        gen = self.gen
        clients = gen._public_clients[rt.semconv]
        for _ in range(gen._poisson(rate)):
            answer = 429 if refused and gen._random() < refused else 0
            gen._serve(rt, base + int(gen._random() * 1e9), gen._randbytes(16), None, tenant,
                       clients[int(gen._random() * 200)], None, answer)

    def _user_login(self, base: int, failing_share: float) -> None:
        """A customer logs in, after 1-3 mistyped passwords for a few of them, a second apart."""
        gen = self.gen
        client = gen._public_clients["new"][int(gen._random() * 200)]
        user = f"user-{int(gen._random() * _USERS)}"
        start = base + int(gen._random() * 1e9)
        failures = 1 + int(gen._random() * 3) if gen._random() < failing_share else 0
        for attempt in range(failures + 1):
            self._login(start + attempt * 1_000_000_000, client, user, 401 if attempt < failures else 0)

    def _stranger(self) -> str:
        """A user name from a leaked list: almost never one of the shop's customers."""
        return f"leaked-{self.gen._randbytes(4).hex()}"

    def _login(self, start: int, client_attr: bytes, user: str, answer: int) -> None:
        gen = self.gen
        tenant = gen._tenant_pick[int(gen._random() * len(gen._tenant_pick))]
        gen._serve(self.login, start, gen._randbytes(16), None, tenant, client_attr, None, answer,
                   _str_attr_fast(self._user_key, user))

    def retrying_call(self, c: _CallRT, start: int, trace_id: bytes, parent: bytes, pod: Pod) -> tuple[int, int]:
        """A call under a retry policy: failed attempts are retried at once, each a CLIENT
        span of the same parent (with http.request.resend_count from new-semconv callers)."""
        gen = self.gen
        end, up = gen._call_dep(c, start, trace_id, parent, pod)
        for attempt in range(1, c.retries + 1):
            if not up:
                break
            end, up = gen._call_dep(c, end + 50_000, trace_id, parent, pod,
                                    self._resend[min(attempt, 15)] if c.resend_count else b"")
        return end, up

    # ---- ground truth

    def ground_truth(self) -> list[GroundTruth]:
        from otel_ai.analysis.redact import pseudonym  # what otel-ai shows for an address

        out = []
        for f in self.faults:
            onset = self.gen.start_ns + int(round(f.start_s * 1e9))
            if f.kind == "retry_storm":
                out.append(GroundTruth(f.kind, onset, [("dependency", f.target, "", "")], {"RETRY_STORM"},
                                       ("service.name", f.service)))
            elif f.kind == "credential_stuffing":
                out.append(GroundTruth(f.kind, onset, [topo.subject_of(LOGIN_ROUTE)], {"SECURITY_ANOMALY"},
                                       ("client.address", pseudonym(f.params["address"]))))
            else:
                route = topo.ROUTE_BY_ID[topo.route_id(f.service, f.route)]
                kind = "RATE_LIMIT_BREACH" if f.kind == "rate_limit_breach" else "CAPACITY_WARNING"
                out.append(GroundTruth(f.kind, onset, [topo.subject_of(route)], {kind}, ("tenant.id", f.target)))
        return out


def __getattr__(name: str):
    """``scenario``, ``benign`` and ``SCENARIOS`` live in scenarios.py; re-exported lazily."""
    if name in ("scenario", "benign", "SCENARIOS", "benign_noise"):
        from otel_ai.testing import scenarios

        return getattr(scenarios, name)
    raise AttributeError(name)
