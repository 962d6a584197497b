"""The HTTP plumbing the loopback fakes (Anthropic, Slack) share: a quiet threaded server
that stops promptly, and a keep-alive handler base whose subclasses implement _serve()."""
from __future__ import annotations

import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any, Self



class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for a handler that is sleeping through a scripted delay.
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: Any, handler: type[BaseHTTPRequestHandler]) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (e.g. after its own timeout) is routine, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        shutdown_sockets(connections)


class LoopbackHandler(BaseHTTPRequestHandler):
    # Keep-alive like the real APIs, so the SDKs' connection reuse is exercised too.
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        try:
            self._serve()
        except ConnectionError:
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        raise NotImplementedError

    def post_body(self, max_bytes: int) -> bytes | None:
        """The body of a POST of a declared length up to max_bytes; None for anything else,
        and the connection is closed, since an unread body would be taken for the next request."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if self.command != "POST" or not 0 <= length <= max_bytes:
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class LoopbackFake:
    """Start/stop and `with` support for a fake served by LoopbackServer; subclasses set
    `handler` and `thread_name`, and may add a path to `base_url`."""

    handler: type[LoopbackHandler]
    thread_name = "loopback-fake"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        # Gets one readable line per call received; `python -m` prints them.
        self.echo: Callable[[str], None] | None = None

    def _echo(self, describe: Callable[[], str]) -> None:
        if self.echo is not None:
            self.echo(f"{time.strftime('%H:%M:%S')} {describe()}")

    def start(self) -> Self:
        if self._server is None:
            self._server = LoopbackServer((self.host, self.port), self, self.handler)
            # The poll interval is how long stop() waits for the accept loop to notice.
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise go on being served by their handler threads.
        server.close_connections()
        thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


class Outages:
    """rate_limit() and down() for a fake: what a real API does on a bad day."""

    def __init__(self) -> None:
        self._outage_lock = threading.Lock()
        self._limited_until = 0.0
        self._retry_after = 1
        self._down_until = 0.0

    def rate_limit(self, seconds: float, retry_after: int = 1) -> None:
        """Answer 429 with Retry-After for the next `seconds`."""
        with self._outage_lock:
            self._limited_until, self._retry_after = time.monotonic() + seconds, retry_after

    def down(self, seconds: float) -> None:
        """Answer 503 for the next `seconds`."""
        with self._outage_lock:
            self._down_until = time.monotonic() + seconds

    def recover(self) -> None:
        with self._outage_lock:
            self._limited_until = self._down_until = 0.0

    def outage(self) -> tuple[int, dict[str, str]] | None:
        """(status, headers) to answer now instead of serving, or None."""
        now = time.monotonic()
        with self._outage_lock:
            if now < self._down_until:
                return 503, {}
            if now < self._limited_until:
                return 429, {"Retry-After": str(self._retry_after)}
        return None


def serve_from_cli(fake: LoopbackFake, banner: Callable[[], str]) -> int:
    """Start the fake for `python -m`, or say why it cannot listen; then serve_until_signalled."""
    try:
        fake.start()
    except OSError as exc:
        print(f"cannot listen on {fake.host}:{fake.port}: {exc}", file=sys.stderr)
        return 1
    return serve_until_signalled(fake, banner())


def serve_until_signalled(fake: LoopbackFake, banner: str) -> int:
    """The `python -m` entry of a fake: print the banner, then one line per call received,
    until Ctrl-C or SIGTERM."""
    # SIGTERM (docker stop, Popen.terminate) ends it as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake.echo = lambda line: print(line, flush=True)
    print(banner, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


def shutdown_sockets(connections) -> None:
    """Wake handler threads blocked on idle keep-alive connections so a stop is prompt."""
    for connection in connections:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer
