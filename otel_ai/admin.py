"""The admin HTTP port: health, readiness, /metrics and a read-only incidents API.

Routes live in a table of (method, path regex) -> handler so that later features
(e.g. POST /slack/actions) add one entry instead of another branch.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore

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
    ) -> None:
        self.store = store
        self.token = token
        self.metrics = metrics
        self.host = host
        self.port = port
        self._ready = ready
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_route("GET", r"/healthz", self._healthz)
        self.add_route("GET", r"/readyz", self._readyz)
        self.add_route("GET", r"/metrics", self._metrics)
        self.add_route("GET", r"/api/incidents", self._list_incidents)
        self.add_route("GET", r"/api/incidents/(?P<id>[^/]+)", self._get_incident)

    def add_route(self, method: str, pattern: str, handler: Handler, private: bool = False) -> None:
        """Register handler for method and a path regex matched in full; named groups
        arrive in request.params. Private routes change state or spend money: they need
        the admin token, or, when none is configured, a loopback client."""
        self._routes.append((method.upper(), re.compile(pattern), handler, private))

    def _authorized(self, request: Request) -> bool:
        if self.token:
            given = request.headers.get("authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())
        return request.client in ("127.0.0.1", "::1", "localhost") or request.client.startswith("127.")

    def start(self) -> int:
        """Serve in a background thread; returns the bound port (useful with port=0)."""
        if self._server is not None:
            raise RuntimeError("admin server already started")
        server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        # A short poll interval keeps stop() fast; the idle cost is negligible.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otel-ai-admin", daemon=True)
        self._thread.start()
        self.port = server.server_address[1]
        log.info("admin HTTP listening on %s:%d", self.host, self.port)
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
            if private and not self._authorized(request):
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        admin = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                try:
                    response = self._respond()
                except Exception:
                    log.exception("admin request failed: %s %s", self.command, self.path)
                    response = Response.error(500, "internal error")
                self._write(response)

            def _respond(self) -> Response:
                url = urlsplit(self.path)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    self.close_connection = True
                    return Response.error(400, "invalid Content-Length")
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    return Response.error(413, "request body too large")
                body = self.rfile.read(length) if length > 0 else b""
                request = Request(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    client=str(self.client_address[0]),
                )
                return admin.dispatch(request)

            def _write(self, response: Response) -> None:
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Content-Length", str(len(response.body)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(response.body)
                except OSError:
                    # The client went away; nothing useful left to do.
                    log.debug("admin client disconnected: %s %s", self.command, self.path)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug("admin %s - " + format, self.address_string(), *args)

        return _Handler

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
        status = request.query_value("status") or None
        if status is not None and status not in INCIDENT_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(INCIDENT_STATUSES)}, got {status!r}")
        limit = min(_int_param(request, "limit", 50, minimum=1), MAX_PAGE)
        offset = _int_param(request, "offset", 0, minimum=0)
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
