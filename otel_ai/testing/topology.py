"""The simulated shop: services, routes, call plans, dependencies and pods.

Pure data plus a seeded pod layout. The generator (traffic.py) turns it into spans;
the ground-truth analysis walks the same call plans, so both agree by construction.

Conventions the detector side relies on:

* Route subject = (service.name, method, route). HTTP: (service, http method,
  http.route template). gRPC: (service, rpc.method, rpc.service).
* Dependency name = client span's ``peer.service``, else ``server.address``, else
  ``db.system/db.namespace``. Every DB client span here has ``server.address``, so a
  database's dependency name is its address ("orders-db").
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

NAMESPACE = "shop"
REGION = "eu-west-1"

# 8 tenants with skewed weights (sum 1.0).
TENANTS: tuple[tuple[str, float], ...] = (
    ("acme", 0.30),
    ("globex", 0.20),
    ("initech", 0.15),
    ("umbrella", 0.12),
    ("hooli", 0.09),
    ("stark", 0.07),
    ("wayne", 0.04),
    ("tyrell", 0.03),
)
TENANT_WEIGHT = dict(TENANTS)


@dataclass(frozen=True)
class Dependency:
    """A leaf the shop calls but whose server side is not instrumented."""

    name: str  # the dependency name as the detector derives it
    kind: str  # "db" or "http"
    address: str  # server.address
    port: int
    median_ms: float
    sigma: float
    peer_service: str | None = None  # http only
    scheme: str = "http"
    db_system: str | None = None  # db only
    db_namespace: str | None = None


@dataclass(frozen=True)
class Call:
    """One step of a route's call plan, made with probability ``p``.

    target: a dependency name, or "service:METHOD ROUTE" for another service's route.
    op: DB operation / HTTP method; detail: DB collection / HTTP path template.
    """

    target: str
    p: float = 1.0
    op: str = "GET"
    detail: str = ""


@dataclass(frozen=True)
class Route:
    service: str
    method: str  # http method, or rpc.method for gRPC
    template: str  # http.route, or rpc.service for gRPC
    rate: float  # direct (edge) requests per second at rate_scale 1
    median_ms: float  # own work, lognormal median
    sigma: float
    base_err: float = 0.002
    calls: tuple[Call, ...] = ()
    internal: str | None = None  # name of an INTERNAL span, if any
    internal_wraps_calls: bool = False  # the calls are made inside the INTERNAL span (their parent), not after
    not_found: float = 0.0  # baseline share of 404s (benign)
    choose_one: bool = False  # calls are alternatives, one per request picked by p (a catch-all route)

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


@dataclass(frozen=True)
class Service:
    name: str
    version: str
    pods: int
    language: str
    scope: str  # instrumentation scope name
    semconv: str  # "new" | "old" | "grpc"
    host: str  # server.address of its server spans
    port: int
    public: bool = False  # entry traffic comes from the internet


SERVICES: tuple[Service, ...] = (
    Service("frontend", "2.8.1", 6, "python", "opentelemetry.instrumentation.flask", "new", "shop.example.com", 443, True),
    Service("catalog", "3.2.0", 6, "java", "io.opentelemetry.spring-webmvc-6.0", "new", "catalog", 8080),
    Service("checkout", "1.4.2", 5, "python", "opentelemetry.instrumentation.flask", "new", "api.shop.example.com", 443, True),
    Service("payments", "0.9.7", 4, "go", "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc", "grpc", "payments", 50051),
    Service("orders", "5.1.3", 4, "nodejs", "@opentelemetry/instrumentation-http", "old", "api.shop.example.com", 443, True),
)
SERVICE_BY_NAME = {s.name: s for s in SERVICES}

DEPENDENCIES: tuple[Dependency, ...] = (
    Dependency("catalog-db", "db", "catalog-db", 5432, 4.5, 0.25, db_system="postgresql", db_namespace="catalog"),
    Dependency("orders-db", "db", "orders-db", 5432, 4.5, 0.25, db_system="postgresql", db_namespace="orders"),
    Dependency("session-cache", "db", "session-cache", 6379, 0.8, 0.3, db_system="redis", db_namespace="0"),
    Dependency("inventory", "http", "inventory.internal", 8080, 9.0, 0.3, peer_service="inventory"),
    Dependency("recommendations", "http", "recs.internal", 8080, 8.0, 0.3, peer_service="recommendations"),
    Dependency("shipping", "http", "api.shipfast.example", 443, 22.0, 0.3, peer_service="shipping", scheme="https"),
    Dependency("payment-gateway", "http", "api.paygate.example", 443, 45.0, 0.3, peer_service="payment-gateway", scheme="https"),
    Dependency("api.mailer.example", "http", "api.mailer.example", 443, 30.0, 0.3, scheme="https"),
)
DEPENDENCY_BY_NAME = {d.name: d for d in DEPENDENCIES}

_PAY = "payments.v1.PaymentService"

ROUTES: tuple[Route, ...] = (
    # frontend: server-rendered pages for browsers
    Route("frontend", "GET", "/", 20, 7.0, 0.4, calls=(
        Call("session-cache", 1.0, "GET"),
        Call("catalog:GET /api/products", 1.0, "GET", "/api/products"),
        Call("recommendations", 1.0, "GET", "/v1/recommendations"),
    ), internal="render home.html"),
    Route("frontend", "GET", "/products/{slug}", 25, 8.0, 0.4, calls=(
        Call("session-cache", 1.0, "GET"),
        Call("catalog:GET /api/products/{id}", 1.0, "GET", "/api/products/{id}"),
        Call("recommendations", 0.8, "GET", "/v1/recommendations/{id}"),
    ), internal="render product.html", not_found=0.01),
    Route("frontend", "GET", "/search", 10, 9.0, 0.45, calls=(
        Call("catalog:GET /api/products", 1.0, "GET", "/api/products"),
    ), internal="render search.html"),
    # catalog: product API (also called by frontend)
    Route("catalog", "GET", "/api/products", 8, 14.0, 0.4, calls=(
        Call("catalog-db", 1.0, "SELECT", "products"),
    ), internal="ProductMapper.toDto"),
    Route("catalog", "GET", "/api/products/{id}", 10, 13.0, 0.4, calls=(
        Call("catalog-db", 1.0, "SELECT", "products"),
    ), not_found=0.01),
    Route("catalog", "GET", "/api/products/{id}/reviews", 12, 17.0, 0.42, calls=(
        Call("catalog-db", 1.0, "SELECT", "reviews"),
    )),
    Route("catalog", "GET", "/api/categories", 6, 6.0, 0.35, calls=(
        Call("catalog-db", 0.3, "SELECT", "categories"),
    )),
    # checkout: cart and checkout API, called by the browser
    Route("checkout", "GET", "/api/cart", 15, 15.0, 0.4, calls=(
        Call("session-cache", 1.0, "GET"),
    )),
    Route("checkout", "POST", "/api/cart/items", 10, 14.0, 0.4, calls=(
        Call("session-cache", 1.0, "GET"),
        Call("inventory", 1.0, "GET", "/v1/stock/{id}"),
        Call("session-cache", 1.0, "SET"),
    )),
    Route("checkout", "DELETE", "/api/cart/items/{item_id}", 3, 5.0, 0.35, calls=(
        Call("session-cache", 1.0, "DEL"),
    )),
    Route("checkout", "POST", "/api/checkout", 5, 12.0, 0.4, calls=(
        Call("inventory", 1.0, "POST", "/v1/reservations"),
        Call("payments:Charge " + _PAY, 1.0),
        Call("orders-db", 1.0, "INSERT", "orders"),
        Call("shipping", 1.0, "POST", "/v2/shipments"),
    ), internal="validate_cart"),
    # payments: gRPC, called by checkout and orders
    Route("payments", "Charge", _PAY, 0, 6.0, 0.35, calls=(
        Call("payment-gateway", 1.0, "POST", "/v1/charges"),
    )),
    Route("payments", "Refund", _PAY, 0, 5.0, 0.35, calls=(
        Call("payment-gateway", 1.0, "POST", "/v1/refunds"),
    )),
    # orders: old semantic conventions
    Route("orders", "GET", "/api/orders", 12, 18.0, 0.4, calls=(
        Call("orders-db", 1.0, "SELECT", "orders"),
    )),
    Route("orders", "GET", "/api/orders/{order_id}", 15, 7.0, 0.4, calls=(
        Call("orders-db", 1.0, "SELECT", "orders"),
        Call("shipping", 0.5, "GET", "/v2/shipments/{id}"),
    ), not_found=0.005),
    Route("orders", "POST", "/api/orders/{order_id}/cancel", 0.5, 9.0, 0.4, calls=(
        Call("orders-db", 1.0, "UPDATE", "orders"),
        Call("payments:Refund " + _PAY, 1.0),
        Call("api.mailer.example", 1.0, "POST", "/v3/mail/send"),
    )),
    Route("orders", "POST", "/api/orders/export", 0.0, 40.0, 0.5, calls=(
        Call("orders-db", 1.0, "SELECT", "orders"),
    )),
)
ROUTE_BY_ID = {f"{r.service}:{r.key}": r for r in ROUTES}


def route_id(service: str, key: str) -> str:
    return f"{service}:{key}"


def subject_of(route: Route) -> tuple[str, str, str, str]:
    return ("route", route.service, route.method, route.template)


def call_dependency_name(call: Call) -> str:
    """The dependency name a detector derives from this call's client span."""
    if call.target in DEPENDENCY_BY_NAME:
        return call.target
    return call.target.split(":", 1)[0]  # peer.service = callee service name


def effective_rates(direct: dict[str, float], routes: dict[str, Route] = ROUTE_BY_ID) -> dict[str, float]:
    """Requests/s per route id given direct rates, adding requests induced by calls."""
    callers: dict[str, list[tuple[str, float]]] = {rid: [] for rid in routes}
    for rid, r in routes.items():
        for c in r.calls:
            if c.target in routes:
                callers[c.target].append((rid, c.p))
    memo: dict[str, float] = {}

    def total(rid: str) -> float:
        if rid not in memo:
            memo[rid] = direct.get(rid, 0.0) + sum(total(c) * p for c, p in callers[rid])
        return memo[rid]

    return {rid: total(rid) for rid in routes}


_ALNUM = "bcdfghjklmnpqrstvwxz2456789"


def _rs_hash(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(9))


def _pod_suffix(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(5))


@dataclass(eq=False)
class Pod:
    service: str
    name: str
    version: str
    node: str
    ip: str
    index: int  # slot in the service's replica set
    resource: bytes = field(default=b"", repr=False)  # encoded ResourceSpans.resource field
    scope: bytes = field(default=b"", repr=False)  # encoded ScopeSpans.scope field
    client_attrs: dict = field(default_factory=dict, repr=False)  # as a caller, per callee semconv


def layout(rng: random.Random, n_nodes: int = 7, services: tuple[Service, ...] = SERVICES,
           region: str = REGION) -> tuple[list[str], dict[str, list[Pod]]]:
    """Nodes and initial pods; pods spread over fewer nodes."""
    nodes = [
        f"ip-10-0-{rng.randrange(1, 4)}-{rng.randrange(10, 250)}.{region}.compute.internal" for _ in range(n_nodes)
    ]
    pods: dict[str, list[Pod]] = {}
    for svc in services:
        rs = _rs_hash(rng)
        pods[svc.name] = [new_pod(rng, svc.name, svc.version, rs, nodes[rng.randrange(n_nodes)], i) for i in range(svc.pods)]
    return nodes, pods


def new_pod(rng: random.Random, service: str, version: str, rs_hash: str, node: str, index: int) -> Pod:
    ip = f"10.42.{rng.randrange(0, 8)}.{rng.randrange(2, 254)}"
    return Pod(service, f"{service}-{rs_hash}-{_pod_suffix(rng)}", version, node, ip, index)


def bump_version(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}.0"


# --------------------------------------------------------------------------- topologies
# The generator runs on a Topology: the shop above (the default, unchanged) or the deep
# one in deep_topology.py. Everything topology-specific the generator reads is here.

@dataclass(frozen=True, eq=False)
class Topology:
    name: str
    services: tuple[Service, ...]
    dependencies: tuple[Dependency, ...]
    routes: tuple[Route, ...]
    namespace: str
    region: str
    nodes: int = 7

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_by_name", {s.name: s for s in self.services})
        object.__setattr__(self, "dependency_by_name", {d.name: d for d in self.dependencies})
        object.__setattr__(self, "route_by_id", {route_id(r.service, r.key): r for r in self.routes})

    def layout(self, rng: random.Random) -> tuple[list[str], dict[str, list[Pod]]]:
        return layout(rng, self.nodes, self.services, self.region)

    def effective_rates(self, direct: dict[str, float]) -> dict[str, float]:
        return effective_rates(direct, self.route_by_id)


SHOP = Topology("shop", SERVICES, DEPENDENCIES, ROUTES, NAMESPACE, REGION)


def topology_named(name: str) -> Topology:
    if name == SHOP.name:
        return SHOP
    if name == "deep":
        from otel_ai.testing.deep_topology import DEEP

        return DEEP
    raise ValueError(f"unknown topology {name!r}; known: shop, deep")
