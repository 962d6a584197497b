"""The admin HTTP port: health, readiness, /metrics and a read-only incidents API.

Routes live in a table of (method, path regex) -> handler so that later features
(e.g. POST /slack/actions, the incident page) add one entry instead of another branch.
Handlers are plain blocking functions of Request -> Response; otel_ai.httpserver serves
them (Starlette on uvicorn) and runs them on its bounded thread pool.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import starlette.requests
import starlette.responses
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otel_ai.httpserver import BodyRefused, HttpLimits, HttpServer, read_body
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import PROBLEM_STATUSES, IncidentStore

log = logging.getLogger(__name__)

MAX_PAGE = 500
INCIDENT_STATUSES = ("open", "acknowledged", "resolved")
# Bodies are small form posts (Slack actions); anything bigger is refused rather than buffered.
MAX_BODY_BYTES = 1 << 20


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route pattern
    client: str = ""  # the peer's address

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> "Response":
        return cls(status, text.encode("utf-8"))

    @classmethod
    def json(cls, status: int, payload: Any) -> "Response":
        return cls(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

    @classmethod
    def error(cls, status: int, message: str) -> "Response":
        return cls.json(status, {"error": message})


Handler = Callable[[Request], Response]


class BadRequest(Exception):
    """Raised by handlers for invalid input; becomes a 400 JSON error."""


class AdminServer:
    def __init__(
        self,
        store: IncidentStore,
        metrics: SelfMetrics,
        host: str = "127.0.0.1",
        port: int = 8888,
        ready: Callable[[], bool] = lambda: True,
        token: str | None = None,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        self.store = store
        self.token = token
        self.metrics = metrics
        self.host = host
        self.port = port
        self._ready = ready
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._limits = limits
        self._server: HttpServer | None = None
        self.add_route("GET", r"/healthz", self._healthz)
        self.add_route("GET", r"/readyz", self._readyz)
        self.add_route("GET", r"/metrics", self._metrics)
        self.add_route("GET", r"/api/incidents", self._list_incidents)
        self.add_route("GET", r"/api/incidents/(?P<id>[^/]+)", self._get_incident)
        self.add_route("GET", r"/api/problems", self._list_problems)
        self.add_route("GET", r"/api/problems/(?P<id>[^/]+)", self._get_problem)

    def add_route(self, method: str, pattern: str, handler: Handler, private: bool = False) -> None:
        """Register handler for method and a path regex matched in full; named groups
        arrive in request.params. Private routes change state or spend money: they need
        the admin token, or, when none is configured, a loopback client."""
        self._routes.append((method.upper(), re.compile(pattern), handler, private))

    def authorized(self, request: Request, token: str | None = None) -> bool:
        """The admin token (from the Authorization header, or `token` when a form carries
        it), or, when no token is configured, a loopback client."""
        if self.token:
            given = f"Bearer {token}" if token is not None else request.headers.get("authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())
        return request.client in ("127.0.0.1", "::1", "localhost") or request.client.startswith("127.")

    def start(self) -> int:
        """Serve in a background thread; returns the bound port (useful with port=0)."""
        if self._server is not None:
            raise RuntimeError("admin server already started")
        self._server = HttpServer("admin HTTP", self._asgi, self.host, self.port, self._limits,
                                  port_hint="; choose another with --admin-port (0 = any free port)")
        try:
            self.port = self._server.start()
        except OSError:
            self._server = None
            raise
        return self.port

    def stop(self, grace_s: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace_s)

    async def _asgi(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served
        incoming = starlette.requests.Request(scope, receive)
        try:
            body = await read_body(incoming, MAX_BODY_BYTES, self._limits.body_timeout_s)
        except BodyRefused as refused:
            response = Response.error(refused.status, str(refused))
            response.headers["Connection"] = "close"
        except starlette.requests.ClientDisconnect:
            return
        else:
            request = Request(
                method=incoming.method,
                path=incoming.url.path,
                query=parse_qs(incoming.url.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in incoming.headers.items()},
                body=body,
                client=incoming.client.host if incoming.client else "",
            )
            assert self._server is not None
            response = await self._server.run_blocking(self.dispatch, request)
        await starlette.responses.Response(response.body, response.status, response.headers,
                                           response.content_type)(scope, receive, send)

    # -- dispatch -------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        allowed: list[str] = []
        for method, pattern, handler, private in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            if private and not self.authorized(request):
                return Response.error(401, "this route needs the admin token (Authorization: Bearer ...) "
                                           "or a loopback client")
            request.params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                return handler(request)
            except BadRequest as exc:
                return Response.error(400, str(exc))
            except Exception:
                log.exception("admin handler failed: %s %s", request.method, request.path)
                return Response.error(500, "internal error")
        if allowed:
            response = Response.error(405, f"method {request.method} not allowed on {request.path}")
            response.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return response
        return Response.error(404, f"not found: {request.path}")

    # -- routes -----------------------------------------------------------------------

    def _healthz(self, request: Request) -> Response:
        return Response.text(200, "ok")

    def _readyz(self, request: Request) -> Response:
        if self._ready():
            return Response.text(200, "ready")
        return Response.text(503, "not ready")

    def _metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)

    def _list_incidents(self, request: Request) -> Response:
        status, limit, offset = _page(request, INCIDENT_STATUSES)
        incidents = self.store.list(status=status, limit=limit, offset=offset)
        return Response.json(200, {
            "incidents": [incident.snapshot() for incident in incidents],
            "total": self.store.count(status=status),
        })

    def _get_incident(self, request: Request) -> Response:
        incident_id = request.params["id"]
        incident = self.store.get(incident_id)
        if incident is None:
            return Response.error(404, f"incident not found: {incident_id}")
        return Response.json(200, incident.snapshot())

    def _list_problems(self, request: Request) -> Response:
        status, limit, offset = _page(request, PROBLEM_STATUSES)
        problems = self.store.problems(status=status, limit=limit, offset=offset)
        return Response.json(200, {"problems": [problem.snapshot() for problem in problems],
                                   "total": self.store.count_problems(status=status)})

    def _get_problem(self, request: Request) -> Response:
        problem = self.store.problem(request.params["id"])
        if problem is None:
            return Response.error(404, f"problem not found: {request.params['id']}")
        return Response.json(200, problem.snapshot())


def _page(request: Request, statuses: tuple[str, ...]) -> tuple[str | None, int, int]:
    """A listing's ?status=, ?limit= and ?offset=, checked."""
    status = request.query_value("status") or None
    if status is not None and status not in statuses:
        raise BadRequest(f"status must be one of {', '.join(statuses)}, got {status!r}")
    return status, min(_int_param(request, "limit", 50, minimum=1), MAX_PAGE), _int_param(request, "offset", 0,
                                                                                          minimum=0)


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BadRequest(f"{name} must be >= {minimum}, got {value}")
    return value
