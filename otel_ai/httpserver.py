"""The one way otel-ai serves HTTP: a Starlette app on uvicorn, in a background thread.

The OTLP/HTTP receiver and the admin port (API, Slack actions, incident page) both run
on this. uvicorn does the protocol work (parsing, keep-alive, TLS, graceful shutdown)
on one event loop, so a connection costs no thread; blocking handlers run on a small,
bounded thread pool. Added here, because uvicorn leaves them out:

- a deadline and a size cap for the request head, so a client that connects and never
  finishes its headers (slowloris, half-open scanners) is closed instead of held forever;
- a deadline and a size cap for the body (`read_body`);
- binding the port ourselves, so a taken port fails with the listener's name and port.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import uvicorn
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
# uvicorn warns on every malformed request; those are the client's problem, and a client
# could flood the log with them. Its errors (an app crash, a forced shutdown) still show.
logging.getLogger("uvicorn.error").setLevel(logging.ERROR)

T = TypeVar("T")
# After a refusal, this much of the unread body is swallowed before answering, so that
# closing the connection does not reset it and destroy the answer in flight.
_DRAIN_MAX_BYTES = 16 * 1024 * 1024
_DRAIN_TIMEOUT_S = 1.0
# A request line plus headers larger than this is refused (400); OTLP clients send well under 8 KiB.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpLimits:
    # Beyond this many open connections uvicorn answers new requests 503.
    max_connections: int = 4096
    # From connecting (or from the first byte of a keep-alive request) to the end of the headers.
    header_timeout_s: float = 10.0
    # From the end of the headers to the end of the body.
    body_timeout_s: float = 30.0
    # An idle keep-alive connection is closed after this long (uvicorn takes whole seconds).
    keep_alive_s: int = 60
    # Threads for blocking handlers (decode, SQLite, analysis); they share the GIL anyway.
    handler_threads: int = 4


class ListenError(OSError):
    """A listener could not bind: the message names the listener, address and port."""

    def __str__(self) -> str:
        return str(self.strerror)  # without OSError's "[Errno 98]" prefix: the message says it all


class BodyRefused(Exception):
    """The body broke a limit: `status` is 413 (too large), 408 (too slow) or 400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bind_listener(listener: str, host: str, port: int, hint: str = "") -> socket.socket:
    """A listening TCP socket; ListenError naming `listener` if the port is taken."""
    try:
        # SO_REUSEADDR only (create_server's default): a second listener on the port fails.
        return socket.create_server((host, port), family=_family(host), backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(exc.errno, f"{listener}: port {port} on {host} is already in use "
                                         f"(is another otel-ai running?){hint}") from None
        raise ListenError(exc.errno, f"{listener}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than `limit` bytes (declared or received) and a body
    that takes longer than `timeout_s`. A refused body is drained (bounded) first."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise await _refuse(request, 400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise await _refuse(request, 413, f"request body exceeds {limit} bytes")
    parts: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise await _refuse(request, 413, f"request body exceeds {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise BodyRefused(408, f"request body not received within {timeout_s:g}s") from None
    return b"".join(parts)


async def _refuse(request: Request, status: int, message: str) -> BodyRefused:
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT_S):
            drained = 0
            async for chunk in request.stream():
                drained += len(chunk)
                if drained > _DRAIN_MAX_BYTES:
                    break
    except (TimeoutError, ClientDisconnect, RuntimeError):
        pass  # RuntimeError: the stream was already consumed
    return BodyRefused(status, message)


class _HttpToolsWithHeadLimits(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, in C) plus limits on the request head: a
    deadline, so a client that never finishes its headers is closed, and a size cap.
    uvicorn times out idle keep-alive connections, but not one still "sending" headers."""

    header_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0  # request line and headers of the current request so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()  # the body has its own deadline (read_body)
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            # Raised inside the parser: uvicorn answers 400 and closes the connection.
            raise ValueError(f"request head larger than {MAX_HEAD_BYTES} bytes")

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closing a connection from %s: no complete request head within %gs",
                      self.client, self.header_timeout_s)
            self.transport.close()


class HttpServer:
    """Serve `app` (ASGI) on host:port from a background thread; start() returns the port."""

    def __init__(self, listener: str, app: Any, host: str, port: int, limits: HttpLimits = HttpLimits(),
                 tls_cert_file: str | None = None, tls_key_file: str | None = None, port_hint: str = "") -> None:
        self.listener = listener
        self.limits = limits
        self._app = app
        self._host, self._port = host, port
        self._tls = (str(tls_cert_file), str(tls_key_file)) if tls_cert_file and tls_key_file else None
        self._port_hint = port_hint
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._failure: BaseException | None = None

    @property
    def connections(self) -> int:
        server = self._server
        return len(server.server_state.connections) if server is not None else 0

    def start(self) -> int:
        if self._server is not None:
            raise RuntimeError(f"{self.listener} already started")
        sock = bind_listener(self.listener, self._host, self._port, self._port_hint)
        protocol = type("HttpToolsWithHeadLimits", (_HttpToolsWithHeadLimits,),
                        {"header_timeout_s": self.limits.header_timeout_s})
        config = uvicorn.Config(
            self._app, http=protocol, interface="asgi3", lifespan="off", log_config=None, access_log=False,
            limit_concurrency=self.limits.max_connections, timeout_keep_alive=self.limits.keep_alive_s,
            timeout_graceful_shutdown=5, server_header=False,
            ssl_certfile=self._tls[0] if self._tls else None, ssl_keyfile=self._tls[1] if self._tls else None)
        server = uvicorn.Server(config)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, sock, started), name=self.listener,
                                        daemon=True)
        self._server = server
        self._thread.start()
        started.wait()
        if not server.started:
            self._server = None
            sock.close()
            raise ListenError(0, f"{self.listener} failed to start: {self._failure}")
        bound = sock.getsockname()[1]
        log.info("%s listening on %s:%d%s", self.listener, self._host, bound, " (TLS)" if self._tls else "")
        return bound

    def _run(self, server: uvicorn.Server, sock: socket.socket, started: threading.Event) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._limiter = anyio.CapacityLimiter(self.limits.handler_threads)
            watcher = asyncio.create_task(_set_when(lambda: server.started or server.should_exit, started))
            try:
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()
                # Whatever the grace period left open (a client mid-upload) is closed now.
                for connection in list(server.server_state.connections):
                    connection.transport.close()
                started.set()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start(); SystemExit from uvicorn included
            self._failure = exc
            log.error("%s stopped: %s", self.listener, exc)
            started.set()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking handler on the server's bounded thread pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; requests in flight get grace_s; idle connections close now."""
        server, self._server = self._server, None
        if server is None:
            return
        # At least a moment, for the connections uvicorn has just asked to close to go.
        server.config.timeout_graceful_shutdown = max(0.2, grace_s)  # type: ignore[assignment]
        server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=grace_s + 5)
            self._thread = None


async def _set_when(condition: Callable[[], bool], event: threading.Event) -> None:
    while not condition():
        await asyncio.sleep(0.005)
    event.set()

