"""OTLP/HTTP trace receiver: POST /v1/traces with protobuf or JSON bodies.

Standard library only. Every size limit is applied before the bytes are held in
memory: Content-Length is checked before reading, chunked bodies while reading, and
gzip output while decompressing, so neither a large body nor a gzip bomb costs more
than max_request_bytes.
"""
from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from otel_ai.receiver.consumer import JSON as JSON_ENCODING
from otel_ai.receiver.consumer import PROTOBUF as PROTOBUF_ENCODING
from otel_ai.receiver.consumer import InvalidRequest, Saturated, TraceConsumer
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
TRANSPORT = "http"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_READ_CHUNK = 64 * 1024
# A client that stops sending mid-request must not hold a handler thread forever.
_SOCKET_TIMEOUT_S = 30.0
_DRAIN_MAX_BYTES = 16 * 1024 * 1024
_DRAIN_TIMEOUT_S = 1.0


class RequestRejected(Exception):
    """Ends a request early with an HTTP status; `outcome` labels the request counter."""

    def __init__(self, status: HTTPStatus, outcome: str, message: str, grpc_code: int) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.grpc_code = grpc_code


class OtlpHttpReceiver:
    def __init__(
        self,
        consumer: TraceConsumer,
        metrics: SelfMetrics,
        host: str = "127.0.0.1",
        port: int = 4318,
        max_request_bytes: int = 64 * 1024 * 1024,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        bearer_token: str | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        self.consumer = consumer
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.expected_authorization = f"Bearer {bearer_token}".encode() if bearer_token else None
        self._host = host
        self._port = port
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and serve in a background thread; returns the bound port."""
        server = _Server((self._host, self._port), _make_handler(self))
        if self._tls_cert_file is not None and self._tls_key_file is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls_cert_file), str(self._tls_key_file))
            # The handshake happens in the connection's own thread (see _Server), so a
            # slow or silent client cannot stall accept().
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="otlp-http", daemon=True)
        self._thread.start()
        bound_port = server.server_address[1]
        log.info("OTLP/HTTP receiver listening on %s:%d%s", self._host, bound_port,
                 " (TLS)" if self._tls_cert_file else "")
        return bound_port

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting connections, give in-flight requests grace_s, then close
        whatever is left (idle keep-alive connections included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.wait_for_requests(grace_s)
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=grace_s)
            self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._lock = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._requests_in_flight = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(_SOCKET_TIMEOUT_S)
            request.do_handshake()
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Broken connections and failed TLS handshakes are the client's problem;
        # the default prints a traceback to stderr.
        log.debug("OTLP/HTTP connection from %s failed", client_address, exc_info=True)

    def request_started(self) -> None:
        with self._lock:
            self._requests_in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._requests_in_flight -= 1
            self._lock.notify_all()

    def wait_for_requests(self, timeout_s: float) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._requests_in_flight == 0, timeout=timeout_s)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        shutdown_sockets(connections)


def _make_handler(receiver: OtlpHttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(_OtlpHandler):
        pass

    Handler.receiver = receiver
    return Handler


class _OtlpHandler(BaseHTTPRequestHandler):
    receiver: OtlpHttpReceiver
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK and Collector exporters expect
    server_version = "otel-ai"
    timeout = _SOCKET_TIMEOUT_S

    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        self.server.request_started()
        self._response_type: str | None = None
        self._body_consumed = False
        try:
            self._handle()
        except RequestRejected as rejection:
            self._count(rejection.outcome)
            if rejection.outcome in ("invalid", "too_large"):
                # An undecodable or oversize body's spans cannot be counted; the
                # request counts as one so the rejection shows next to partial ones.
                self.receiver.metrics.spans_rejected.labels(reason=rejection.outcome).inc()
            self._send_status(rejection)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("OTLP/HTTP client %s went away: %s", self.address_string(), exc)
            self.close_connection = True
        except Exception:
            log.exception("OTLP/HTTP request failed")
            self._count("error")
            try:
                self._send_status(RequestRejected(HTTPStatus.INTERNAL_SERVER_ERROR, "error",
                                                  "internal error while processing the request",
                                                  code_pb2.INTERNAL))
            except OSError:
                self.close_connection = True
        finally:
            self.server.request_finished()

    def _handle(self) -> None:
        if urlsplit(self.path).path != TRACES_PATH:
            self._send_plain(HTTPStatus.NOT_FOUND, f"no such path; OTLP traces go to POST {TRACES_PATH}")
            return
        if self.command != "POST":
            self._send_plain(HTTPStatus.METHOD_NOT_ALLOWED, f"{TRACES_PATH} accepts POST only",
                             {"Allow": "POST"})
            return
        # Known before anything can fail, so that every error answer (401 included)
        # is a google.rpc.Status in the encoding the client speaks.
        self._response_type = self._supported_content_type()
        self._check_authorization()
        if self._response_type is None:
            raise RequestRejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                  f"unsupported Content-Type {self.headers.get('Content-Type')!r}; "
                                  f"use {PROTOBUF} or {JSON}", code_pb2.INVALID_ARGUMENT)
        body = self._read_body()
        self._export(body, JSON_ENCODING if self._response_type == JSON else PROTOBUF_ENCODING)

    def _check_authorization(self) -> None:
        expected = self.receiver.expected_authorization
        if expected is None:
            return
        presented = (self.headers.get("Authorization") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(presented, expected):
            raise RequestRejected(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                                  "missing or invalid bearer token", code_pb2.UNAUTHENTICATED)

    def _supported_content_type(self) -> str | None:
        media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return media_type if media_type in (PROTOBUF, JSON) else None

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise RequestRejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                  f"unsupported Content-Encoding {encoding!r}; use gzip or none",
                                  code_pb2.INVALID_ARGUMENT)
        limit = self.receiver.max_request_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked(limit)
        else:
            body = self._read_sized(limit)
        self._body_consumed = True
        return _gunzip(body, limit) if encoding == "gzip" else body

    def _read_sized(self, limit: int) -> bytes:
        declared = self.headers.get("Content-Length")
        try:
            length = int(declared) if declared is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid",
                                  f"invalid Content-Length {declared!r}", code_pb2.INVALID_ARGUMENT)
        if length > limit:
            raise _too_large(limit)
        return self._read_exactly(length)

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid", "malformed chunked encoding",
                                      code_pb2.INVALID_ARGUMENT) from None
            if size == 0:
                break
            total += size
            if total > limit:
                raise _too_large(limit)
            parts.append(self._read_exactly(size))
            self.rfile.readline(1024)  # CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers carry nothing OTLP uses
        return b"".join(parts)

    def _read_exactly(self, length: int) -> bytes:
        parts: list[bytes] = []
        remaining = length
        while remaining > 0:
            part = self.rfile.read(min(remaining, _READ_CHUNK))
            if not part:
                raise ConnectionError("client closed the connection mid-body")
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def _export(self, body: bytes, encoding: str) -> None:
        try:
            result = self.receiver.consumer.consume(body, TRANSPORT, encoding)
        except InvalidRequest as exc:
            raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid",
                                  f"cannot decode ExportTraceServiceRequest: {exc}",
                                  code_pb2.INVALID_ARGUMENT) from None
        except Saturated as exc:
            retry_after = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
            self._count("unavailable")
            self._send_status(RequestRejected(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", str(exc),
                                              code_pb2.UNAVAILABLE), retry_after)
            return
        response = ExportTraceServiceResponse()
        if result.rejected_spans > 0:
            response.partial_success.rejected_spans = result.rejected_spans
            response.partial_success.error_message = result.error_message
            self._count("partial")
        else:
            self._count("ok")
        self._send_message(HTTPStatus.OK, response)

    def _count(self, outcome: str) -> None:
        self.receiver.metrics.requests.labels(transport=TRANSPORT, outcome=outcome).inc()

    def _send_status(self, rejection: RequestRejected, headers: dict[str, str] | None = None) -> None:
        """A google.rpc.Status in the request's encoding, as OTLP/HTTP specifies;
        plain text when the request's encoding is not one we speak."""
        if self._response_type is None:
            self._send_plain(rejection.status, str(rejection), headers)
            return
        status = status_pb2.Status(code=rejection.grpc_code, message=str(rejection))
        self._send_message(rejection.status, status, headers)

    def _send_message(self, code: HTTPStatus, message: Message, headers: dict[str, str] | None = None) -> None:
        if self._response_type == JSON:
            body = (to_otlp_json(message) if isinstance(message, ExportTraceServiceResponse)
                    else json_format.MessageToJson(message, indent=None)).encode()
        else:
            body = message.SerializeToString()
        self._send(code, self._response_type or PROTOBUF, body, headers)

    def _send_plain(self, code: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(code, "text/plain; charset=utf-8", (text + "\n").encode(), headers)

    def _send(self, code: HTTPStatus, content_type: str, body: bytes, headers: dict[str, str] | None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        unread_body = not self._body_consumed and self._has_body()
        if unread_body:
            # Unread body bytes would be parsed as the next request on this connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if unread_body:
            self._discard_unread_body()

    def _discard_unread_body(self) -> None:
        """Closing a socket with unread input sends a TCP reset, which can destroy the
        answer before the client reads it (typically a 413 sent while the client is
        still uploading); so swallow a bounded amount of the body first."""
        self.wfile.flush()
        try:
            self.connection.settimeout(_DRAIN_TIMEOUT_S)
            remaining = _DRAIN_MAX_BYTES
            while remaining > 0:
                part = self.rfile.read1(min(remaining, _READ_CHUNK))
                if not part:
                    break
                remaining -= len(part)
        except OSError:
            pass

    def _has_body(self) -> bool:
        return (self.headers.get("Content-Length") not in (None, "0")
                or self.headers.get("Transfer-Encoding") is not None)


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"request body exceeds {limit} bytes", code_pb2.RESOURCE_EXHAUSTED)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most `limit` bytes of output, whatever the input claims."""
    parts: list[bytes] = []
    total = 0
    pending = data
    while pending:
        # One decompressor per gzip member: concatenated members are valid gzip.
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                # max_length=0 would mean unlimited; it is always >= 1 here.
                chunk = decompressor.decompress(pending, limit - total + 1)
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                parts.append(chunk)
                pending = decompressor.unconsumed_tail
                if decompressor.eof:
                    pending = decompressor.unused_data
                    break
                if not chunk and not pending:
                    raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid", "truncated gzip body",
                                          code_pb2.INVALID_ARGUMENT)
        except zlib.error as exc:
            raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid", f"invalid gzip body: {exc}",
                                  code_pb2.INVALID_ARGUMENT) from None
    return b"".join(parts)


def shutdown_sockets(connections) -> None:
    """Wake handler threads blocked on idle keep-alive connections so a stop is prompt."""
    for connection in connections:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer
