"""A deep call graph: a rail-booking system of 17 services behind one gateway.

Where the shop (topology.py) is wide and two hops deep, this one is what real systems
look like to a root-cause search: every entry route sits on a tree of 4+ hops with
fan-out (a search calls three services, each of which calls more), services shared
by several callers (account, price, station), gRPC in the middle of HTTP chains, and a
gateway whose catch-all route ``GET /api/*`` forwards each request to one of several
backends. Leaves are uninstrumented databases, caches and external APIs.

Depth from the entry routes (the gateway's), counting service hops::

    web-gateway ─▶ search-service ─▶ route-planner ─▶ timetable-service ─▶ timetable-db
                                   ─▶ station-service ─▶ station-cache, station-db
                ─▶ price-service ─▶ config-service ─▶ config-db
                ─▶ seat-service ─▶ train-service ─▶ train-db
    web-gateway ─▶ booking-service ─▶ account-service ─▶ auth-service ─▶ auth-cache
                                    ─▶ payment-service ─▶ fraud-service ─▶ fraud-model
                                    ─▶ price-service, seat-service, order-service, notification-service
    web-gateway GET /api/* ─▶ one of profile-service (─▶ account-service ─▶ auth-service),
                              station-service, booking-service
"""
from __future__ import annotations

from otel_ai.testing.topology import Call, Dependency, Route, Service, Topology

NAMESPACE = "rail"
REGION = "eu-central-1"

_PRICE = "rail.pricing.v1.PriceService"
_AUTH = "rail.auth.v1.AuthService"
_PAY = "rail.payments.v1.PaymentService"
_SPRING = "io.opentelemetry.spring-webmvc-6.0"
_FLASK = "opentelemetry.instrumentation.flask"
_NODE = "@opentelemetry/instrumentation-http"
_GO_HTTP = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
_GO_GRPC = "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"

SERVICES: tuple[Service, ...] = (
    Service("web-gateway", "1.12.0", 4, "nodejs", _NODE, "new", "www.rail.example", 443, True),
    Service("search-service", "2.3.1", 3, "java", _SPRING, "new", "search-service", 8080),
    Service("route-planner", "4.0.2", 3, "go", _GO_HTTP, "new", "route-planner", 8080),
    Service("timetable-service", "1.7.0", 3, "java", _SPRING, "new", "timetable-service", 8080),
    Service("station-service", "3.1.4", 2, "python", _FLASK, "new", "station-service", 8080),
    Service("price-service", "2.0.5", 3, "go", _GO_GRPC, "grpc", "price-service", 50051),
    Service("config-service", "0.8.3", 2, "java", _SPRING, "new", "config-service", 8080),
    Service("seat-service", "5.2.0", 3, "java", _SPRING, "new", "seat-service", 8080),
    Service("train-service", "1.1.9", 2, "python", _FLASK, "new", "train-service", 8080),
    Service("booking-service", "3.4.0", 3, "java", _SPRING, "new", "booking-service", 8080),
    Service("account-service", "2.6.2", 2, "python", _FLASK, "new", "account-service", 8080),
    Service("auth-service", "1.0.7", 2, "go", _GO_GRPC, "grpc", "auth-service", 50051),
    Service("payment-service", "4.3.1", 3, "go", _GO_GRPC, "grpc", "payment-service", 50051),
    Service("fraud-service", "0.5.2", 2, "python", _FLASK, "new", "fraud-service", 8080),
    Service("order-service", "6.0.1", 3, "nodejs", _NODE, "old", "order-service", 8080),
    Service("notification-service", "1.2.0", 2, "nodejs", _NODE, "new", "notification-service", 8080),
    Service("profile-service", "1.4.0", 2, "python", _FLASK, "new", "profile-service", 8080),
)


def _db(name: str, system: str, namespace: str, median_ms: float, port: int = 5432) -> Dependency:
    return Dependency(name, "db", name, port, median_ms, 0.3, db_system=system, db_namespace=namespace)


DEPENDENCIES: tuple[Dependency, ...] = (
    _db("timetable-db", "postgresql", "timetable", 3.5),
    _db("station-db", "postgresql", "stations", 3.0),
    _db("station-cache", "redis", "0", 0.6, 6379),
    _db("price-db", "postgresql", "pricing", 2.5),
    _db("config-db", "postgresql", "config", 2.0),
    _db("seat-db", "postgresql", "seats", 4.0),
    _db("train-db", "postgresql", "trains", 3.0),
    _db("booking-db", "postgresql", "bookings", 4.0),
    _db("account-db", "postgresql", "accounts", 3.0),
    _db("auth-cache", "redis", "1", 0.5, 6379),
    _db("orders-db", "postgresql", "orders", 4.5),
    Dependency("fraud-model", "http", "fraud-model.ml.internal", 8080, 20.0, 0.3, peer_service="fraud-model"),
    Dependency("payment-provider", "http", "api.payprovider.example", 443, 110.0, 0.3,
               peer_service="payment-provider", scheme="https"),
    Dependency("api.mailer.example", "http", "api.mailer.example", 443, 35.0, 0.3, scheme="https"),
)

ROUTES: tuple[Route, ...] = (
    # web-gateway: the entry routes, one of them a catch-all forwarding to one backend each
    Route("web-gateway", "GET", "/api/search", 25, 3.0, 0.3, calls=(
        Call("search-service:GET /search", 1.0, "GET", "/search"),
    )),
    Route("web-gateway", "GET", "/api/trains/{id}", 8, 2.5, 0.3, calls=(
        Call("train-service:GET /trains/{id}", 1.0, "GET", "/trains/{id}"),
    ), not_found=0.01),
    Route("web-gateway", "POST", "/api/bookings", 6, 3.0, 0.3, calls=(
        Call("booking-service:POST /bookings", 1.0, "POST", "/bookings"),
    )),
    Route("web-gateway", "GET", "/api/bookings/{id}", 8, 2.5, 0.3, calls=(
        Call("booking-service:GET /bookings/{id}", 1.0, "GET", "/bookings/{id}"),
    ), not_found=0.005),
    Route("web-gateway", "GET", "/api/*", 14, 2.0, 0.3, calls=(
        Call("profile-service:GET /profile/preferences", 0.45, "GET", "/profile/preferences"),
        Call("station-service:GET /stations", 0.35, "GET", "/stations"),
        Call("booking-service:GET /bookings/{id}", 0.20, "GET", "/bookings/{id}"),
    ), choose_one=True),
    # search fans out to three services
    Route("search-service", "GET", "/search", 0, 6.0, 0.35, calls=(
        Call("route-planner:GET /plans", 1.0, "GET", "/plans"),
        Call("price-service:Quote " + _PRICE, 1.0),
        Call("seat-service:GET /seats/availability", 1.0, "GET", "/seats/availability"),
    )),
    Route("route-planner", "GET", "/plans", 0, 9.0, 0.35, calls=(
        Call("station-service:GET /stations/{id}", 1.0, "GET", "/stations/{id}"),
        Call("timetable-service:GET /timetable/departures", 1.0, "GET", "/timetable/departures"),
        Call("timetable-service:GET /timetable/departures", 0.5, "GET", "/timetable/departures"),
    )),
    Route("timetable-service", "GET", "/timetable/departures", 0, 5.0, 0.35, calls=(
        Call("timetable-db", 1.0, "SELECT", "departures"),
    )),
    Route("station-service", "GET", "/stations/{id}", 0, 3.0, 0.35, calls=(
        Call("station-cache", 1.0, "GET"),
        Call("station-db", 0.2, "SELECT", "stations"),
    )),
    Route("station-service", "GET", "/stations", 0, 4.0, 0.35, calls=(
        Call("station-db", 1.0, "SELECT", "stations"),
    )),
    Route("price-service", "Quote", _PRICE, 0, 4.0, 0.35, calls=(
        Call("config-service:GET /config/fares", 1.0, "GET", "/config/fares"),
        Call("price-db", 1.0, "SELECT", "fares"),
    )),
    Route("config-service", "GET", "/config/fares", 0, 2.5, 0.35, calls=(
        Call("config-db", 1.0, "SELECT", "fares"),
    )),
    Route("seat-service", "GET", "/seats/availability", 0, 5.0, 0.35, calls=(
        Call("train-service:GET /trains/{id}/layout", 1.0, "GET", "/trains/{id}/layout"),
        Call("seat-db", 1.0, "SELECT", "seats"),
    )),
    Route("seat-service", "POST", "/seats/holds", 0, 4.0, 0.35, calls=(
        Call("seat-db", 1.0, "INSERT", "holds"),
    )),
    Route("train-service", "GET", "/trains/{id}", 0, 4.0, 0.35, calls=(
        Call("train-db", 1.0, "SELECT", "trains"),
    ), not_found=0.01),
    Route("train-service", "GET", "/trains/{id}/layout", 0, 3.5, 0.35, calls=(
        Call("train-db", 1.0, "SELECT", "layouts"),
    )),
    # booking: the long write path
    Route("booking-service", "POST", "/bookings", 0, 12.0, 0.35, calls=(
        Call("account-service:GET /accounts/{id}", 1.0, "GET", "/accounts/{id}"),
        Call("price-service:Quote " + _PRICE, 1.0),
        Call("seat-service:POST /seats/holds", 1.0, "POST", "/seats/holds"),
        Call("payment-service:Pay " + _PAY, 1.0),
        Call("order-service:POST /orders", 1.0, "POST", "/orders"),
        Call("notification-service:POST /notifications", 1.0, "POST", "/notifications"),
    ), internal="BookingSaga.run", internal_wraps_calls=True),
    Route("booking-service", "GET", "/bookings/{id}", 0, 5.0, 0.35, calls=(
        Call("booking-db", 1.0, "SELECT", "bookings"),
        Call("order-service:GET /orders/{order_id}", 1.0, "GET", "/orders/{order_id}"),
    ), not_found=0.005),
    Route("account-service", "GET", "/accounts/{id}", 0, 4.0, 0.35, calls=(
        Call("auth-service:Verify " + _AUTH, 1.0),
        Call("account-db", 1.0, "SELECT", "accounts"),
    )),
    Route("auth-service", "Verify", _AUTH, 0, 1.5, 0.35, calls=(
        Call("auth-cache", 1.0, "GET"),
    )),
    Route("payment-service", "Pay", _PAY, 0, 8.0, 0.35, calls=(
        Call("fraud-service:POST /score", 1.0, "POST", "/score"),
        Call("payment-provider", 1.0, "POST", "/v1/payments"),
    )),
    Route("fraud-service", "POST", "/score", 0, 18.0, 0.35, calls=(
        Call("fraud-model", 1.0, "POST", "/v1/models/fraud:predict"),
    )),
    Route("order-service", "POST", "/orders", 0, 6.0, 0.35, calls=(
        Call("orders-db", 1.0, "INSERT", "orders"),
    )),
    Route("order-service", "GET", "/orders/{order_id}", 0, 4.0, 0.35, calls=(
        Call("orders-db", 1.0, "SELECT", "orders"),
    )),
    Route("notification-service", "POST", "/notifications", 0, 3.0, 0.35, calls=(
        Call("api.mailer.example", 1.0, "POST", "/v3/mail/send"),
    )),
    Route("profile-service", "GET", "/profile/preferences", 0, 5.0, 0.35, calls=(
        Call("account-service:GET /accounts/{id}", 1.0, "GET", "/accounts/{id}"),
        Call("station-service:GET /stations", 0.3, "GET", "/stations"),
    )),
)

DEEP = Topology("deep", SERVICES, DEPENDENCIES, ROUTES, NAMESPACE, REGION, nodes=9)
