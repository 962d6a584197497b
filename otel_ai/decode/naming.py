"""The interning every reader shares: routes and dependencies, resources, suspect pairs.

The naming rules live here once. The Python readers call them per span; the native
reader keeps a cache in C keyed by the raw strings these rules read, and calls
`SubjectNaming.resolve` only on a miss, so both name every span alike.
"""
from __future__ import annotations

import re

from otel_ai.decode.captures import NOT_SUSPECT_KEYS, PairInterner, value_text
from otel_ai.decode.child_index import ChildIndex
from otel_ai.decode.contract import GENERATED_ATTRIBUTE
from otel_ai.resources import ResourceInfo, ResourceTable, instance_of
from otel_ai.subjects import SubjectTable

MAX_METHOD_CHARS = 16
MAX_ROUTE_CHARS = 256
MAX_DEPENDENCY_CHARS = 128
MAX_SPAN_NAME_CHARS = 200

# Rules, as the native cache names them (one character each).
ROUTE, RPC, UNROUTED, DEPENDENCY, DB_DEPENDENCY = "R", "P", "N", "D", "B"

_ID_SEGMENT = re.compile(r"^(?=.*\d)[\w\-.~%:]{1,}$|^[0-9a-fA-F\-]{16,}$")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


def route_from_span_name(name: str) -> str:
    """A route-like name for SERVER spans without http.route: the span name, with
    anything that looks like an id or a query string replaced, so that a raw URL path
    never becomes a route."""
    name = name[:MAX_SPAN_NAME_CHARS]
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


def span_subject(kind: int, get, text, number, name: str) -> tuple | None:
    """How a Python reader reads one SERVER (kind 2) or CLIENT span: (rule, a, b, c, HTTP
    status, gRPC status, resend count) for `SubjectNaming.resolve`, or None for a CLIENT
    span without a dependency name. `get(key)` is an attribute value or None, `text(value)`
    its string ("" unless it is one), `number(value)` its integer as reference.int_of reads
    it. _otlp.c's parse_span is the same rule in C.

    Routes: http.route, else rpc.service/rpc.method/rpc.system, else the templated span
    name. Dependencies: peer.service, else server.address, else db.system/db.namespace
    (old names too), else rpc.service."""
    value = get("http.response.status_code")
    if value is None:
        value = get("http.status_code")
    http_status = 0 if value is None else number(value)
    rpc = get("rpc.service")
    grpc_status = -1
    if rpc is not None:
        value = get("rpc.grpc.status_code")
        if value is not None:
            grpc_status = number(value)
    if kind == 2:
        method = get("http.request.method")
        if method is None:
            method = get("http.method")
        method = "" if method is None else text(method)
        route = get("http.route")
        if route is not None:
            return ROUTE, method, text(route), "", http_status, grpc_status, 0
        if rpc is not None:
            rpc_method, rpc_system = get("rpc.method"), get("rpc.system")
            return (RPC, text(rpc), "" if rpc_method is None else text(rpc_method),
                    "" if rpc_system is None else text(rpc_system), http_status, grpc_status, 0)
        return UNROUTED, method, name, "", http_status, grpc_status, 0
    value = get("http.request.resend_count")
    resend = 0 if value is None else number(value)
    for key in ("peer.service", "server.address", "net.peer.name"):
        value = get(key)
        if value is not None and text(value):
            return DEPENDENCY, text(value), "", "", http_status, grpc_status, resend
    system = get("db.system.name") or get("db.system")
    if system is not None and text(system):
        namespace = get("db.namespace") or get("db.name")
        if namespace is not None and text(namespace):
            return DB_DEPENDENCY, text(system), text(namespace), "", http_status, grpc_status, resend
        return DEPENDENCY, text(system), "", "", http_status, grpc_status, resend
    if rpc is not None and text(rpc):
        return DEPENDENCY, text(rpc), "", "", http_status, grpc_status, resend
    return None


def dependency_name(rule: str, a: str, b: str) -> str:
    """The name of a dependency as span_subject's DEPENDENCY / DB_DEPENDENCY rule gives it."""
    return (a if rule == DEPENDENCY else f"{a}/{b}")[:MAX_DEPENDENCY_CHARS]


class SubjectNaming:
    """Interning state of one pipeline's decode stage. Not thread-safe: callers serialise."""

    def __init__(self, subjects: SubjectTable):
        self.subjects = subjects
        self.resources = ResourceTable()
        self.pairs = PairInterner()
        self.children = ChildIndex()
        self._templates: dict[str, str] = {}  # span name -> route template (regex work, so cached)

    # ---- routes (SERVER spans) and dependencies (CLIENT spans)
    def route(self, service: str, method: str, route: str) -> int:
        return self.subjects.route(service, method[:MAX_METHOD_CHARS], route[:MAX_ROUTE_CHARS])

    def rpc_route(self, service: str, rpc_service: str, rpc_method: str, rpc_system: str) -> int:
        system = (rpc_system or "rpc").upper()[:MAX_METHOD_CHARS]
        return self.subjects.route(service, system, f"{rpc_service}/{rpc_method}"[:MAX_ROUTE_CHARS])

    def unrouted(self, service: str, method: str, span_name: str) -> int:
        template = self._templates.get(span_name)
        if template is None:
            if len(self._templates) >= 50_000:
                self._templates.clear()
            template = self._templates[span_name] = route_from_span_name(span_name)
        return self.subjects.route(service, method[:MAX_METHOD_CHARS], template)

    def dependency(self, name: str) -> int:
        return self.subjects.dependency(dependency_name(DEPENDENCY, name, ""))

    def db_dependency(self, system: str, namespace: str) -> int:
        return self.subjects.dependency(dependency_name(DB_DEPENDENCY, system, namespace))

    def resolve(self, rule: str, service: str, a: str, b: str, c: str) -> tuple[int, bool]:
        """A cache miss of the native reader: the subject id, and whether it is an overflow
        subject (those lookups are counted on every hit, as SubjectTable counts them)."""
        before = self.subjects.overflowed
        if rule == ROUTE:
            sid = self.route(service, a, b)
        elif rule == RPC:
            sid = self.rpc_route(service, a, b, c)
        elif rule == UNROUTED:
            sid = self.unrouted(service, a, b)
        elif rule == DEPENDENCY:
            sid = self.dependency(a)
        elif rule == DB_DEPENDENCY:
            sid = self.db_dependency(a, b)
        else:
            raise ValueError(f"unknown naming rule {rule!r}")
        return sid, self.subjects.overflowed != before

    # ---- resources
    def resource(self, attributes) -> tuple[ResourceInfo, int] | None:
        """The service, suspect pairs and id of a resource, from its attributes (a map of
        key -> view AnyValue). None marks otel-ai's own output (the loop guard)."""
        return self.resource_values({key: (value.WhichOneof("value"), value.string_value, value.int_value,
                                           value.bool_value) for key, value in attributes.items()})

    def resource_values(self, values: dict[str, tuple]) -> tuple[ResourceInfo, int] | None:
        """resource(), over (oneof field, string, int, bool) per attribute key."""
        if GENERATED_ATTRIBUTE in values:
            return None
        service = "unknown_service"
        pairs = []
        texts: dict[str, str] = {}
        for key, value in sorted(values.items()):
            text = value_text(*value)
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

    # ---- suspect pairs, for the native reader's cache
    def pair(self, key: str, text: str) -> tuple[tuple[str, str] | None, bool]:
        """The interned pair (or None), and whether the key refuses every value from now on."""
        pair = self.pairs.intern(key, text)
        return pair, pair is None and self.pairs.refuses_key(key)
