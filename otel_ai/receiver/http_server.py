"""OTLP/HTTP receiver: POST /v1/traces and /v1/metrics with protobuf or JSON bodies.

Served by otel_ai.httpserver (Starlette on uvicorn). Every size limit is applied
before the bytes are held in memory: Content-Length is checked before reading, the
body while reading, and gzip output while decompressing, so neither a large body nor
a gzip bomb costs more than max_request_bytes. Errors are a google.rpc.Status in the
client's encoding, as the OTLP/HTTP spec asks.
"""
from __future__ import annotations

import hmac
import logging
import zlib
from http import HTTPStatus
from pathlib import Path

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from otel_ai.httpserver import BodyRefused, HttpLimits, HttpServer, read_body
from otel_ai.receiver.consumer import JSON as JSON_ENCODING
from otel_ai.receiver.consumer import PROTOBUF as PROTOBUF_ENCODING
from otel_ai.receiver.consumer import InvalidRequest, MetricsConsumer, Saturated, TraceConsumer
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.receiver.signals import METRICS, TRACES, Signal
from otel_ai.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

TRANSPORT = "http"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_GRPC_CODE_OF_REFUSAL = {413: code_pb2.RESOURCE_EXHAUSTED, 408: code_pb2.DEADLINE_EXCEEDED,
                         400: code_pb2.INVALID_ARGUMENT}
_OUTCOME_OF_REFUSAL = {413: "too_large", 408: "timeout", 400: "invalid"}


class RequestRejected(Exception):
    """Ends a request early with an HTTP status; `outcome` labels the request counter."""

    def __init__(self, status: HTTPStatus, outcome: str, message: str, grpc_code: int,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.grpc_code = grpc_code
        self.headers = headers or {}


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
        limits: HttpLimits = HttpLimits(),
        metrics_consumer: MetricsConsumer | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        self.consumer = consumer
        self.metrics_consumer = metrics_consumer
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.expected_authorization = f"Bearer {bearer_token}".encode() if bearer_token else None
        signals = [TRACES] if metrics_consumer is None else [TRACES, METRICS]  # else /v1/metrics is 404
        app = Router([Route(signal.http_path, self._handler(signal), methods=["POST"]) for signal in signals],
                     default=_not_found([signal.http_path for signal in signals]))
        self.server = HttpServer("OTLP/HTTP receiver", app, host, port, limits,
                                 str(tls_cert_file) if tls_cert_file else None,
                                 str(tls_key_file) if tls_key_file else None,
                                 port_hint="; choose another with --http-port (0 = any free port)")

    def start(self) -> int:
        """Bind and serve in a background thread; returns the bound port."""
        return self.server.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting connections, give in-flight requests grace_s, then close
        whatever is left (idle keep-alive connections included)."""
        self.server.stop(grace_s)

    def _handler(self, signal: Signal):
        async def handle(request: Request) -> Response:
            return await self._handle(signal, request)
        return handle

    async def _handle(self, signal: Signal, request: Request) -> Response:
        # Known before anything can fail, so that every error answer (401 included)
        # is a google.rpc.Status in the encoding the client speaks.
        response_type = _supported_content_type(request)
        try:
            self._check_authorization(request)
            if response_type is None:
                raise RequestRejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                      f"unsupported Content-Type {request.headers.get('content-type')!r}; "
                                      f"use {PROTOBUF} or {JSON}", code_pb2.INVALID_ARGUMENT)
            encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
            if encoding not in ("identity", "gzip"):
                raise RequestRejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                      f"unsupported Content-Encoding {encoding!r}; use gzip or none",
                                      code_pb2.INVALID_ARGUMENT)
            try:
                body = await read_body(request, self.max_request_bytes, self.server.limits.body_timeout_s)
            except BodyRefused as refused:
                raise RequestRejected(HTTPStatus(refused.status), _OUTCOME_OF_REFUSAL[refused.status],
                                      str(refused), _GRPC_CODE_OF_REFUSAL[refused.status],
                                      {"Connection": "close"}) from None
            return await self.server.run_blocking(self._export, signal, body, encoding == "gzip", response_type)
        except RequestRejected as rejection:
            self._count(signal, rejection.outcome)
            if rejection.outcome in ("invalid", "too_large"):
                # An undecodable or oversize body's spans (or data points) cannot be
                # counted; the request counts as one so the rejection shows next to partial ones.
                signal.rejected(self.metrics).labels(reason=rejection.outcome).inc()
            return _status_response(rejection, response_type)
        except ClientDisconnect:
            log.debug("OTLP/HTTP client %s went away mid-request", request.client)
            return Response(status_code=400)  # nobody reads it
        except Exception:
            log.exception("OTLP/HTTP request failed")
            self._count(signal, "error")
            return _status_response(RequestRejected(HTTPStatus.INTERNAL_SERVER_ERROR, "error",
                                                    "internal error while processing the request",
                                                    code_pb2.INTERNAL), response_type)

    def _check_authorization(self, request: Request) -> None:
        expected = self.expected_authorization
        if expected is None:
            return
        presented = (request.headers.get("authorization") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(presented, expected):
            raise RequestRejected(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                                  "missing or invalid bearer token", code_pb2.UNAUTHENTICATED)

    def _export(self, signal: Signal, body: bytes, gzipped: bool, response_type: str) -> Response:
        """Blocking part, on the server's thread pool: gunzip, decode, hand to the pipeline."""
        if gzipped:
            body = _gunzip(body, self.max_request_bytes)
        try:
            consume = signal.consume_of(self.consumer if signal is TRACES else self.metrics_consumer)
            result = consume(body, TRANSPORT, JSON_ENCODING if response_type == JSON else PROTOBUF_ENCODING)
        except InvalidRequest as exc:
            raise RequestRejected(HTTPStatus.BAD_REQUEST, "invalid", f"cannot decode {signal.request_name}: {exc}",
                                  code_pb2.INVALID_ARGUMENT) from None
        except Saturated as exc:
            retry_after = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
            raise RequestRejected(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", str(exc),
                                  code_pb2.UNAVAILABLE, retry_after) from None
        response = signal.response_type()
        self._count(signal, "partial" if signal.partial(response, result) > 0 else "ok")
        return _message_response(HTTPStatus.OK, response, response_type)

    def _count(self, signal: Signal, outcome: str) -> None:
        signal.requests(self.metrics).labels(transport=TRANSPORT, outcome=outcome).inc()


def _supported_content_type(request: Request) -> str | None:
    media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return media_type if media_type in (PROTOBUF, JSON) else None


def _status_response(rejection: RequestRejected, response_type: str | None) -> Response:
    """A google.rpc.Status in the request's encoding, as OTLP/HTTP specifies;
    plain text when the request's encoding is not one we speak."""
    if response_type is None:
        return PlainTextResponse(f"{rejection}\n", rejection.status, rejection.headers)
    status = status_pb2.Status(code=rejection.grpc_code, message=str(rejection))
    return _message_response(rejection.status, status, response_type, rejection.headers)


def _message_response(code: HTTPStatus, message: Message, response_type: str,
                      headers: dict[str, str] | None = None) -> Response:
    if response_type == JSON:
        body = to_otlp_json(message).encode()
    else:
        body = message.SerializeToString()
    return Response(body, code, headers, media_type=response_type)


def _not_found(paths: list[str]):
    text = f"no such path; OTLP goes to POST {' or '.join(paths)}\n"

    async def not_found(scope, receive, send) -> None:
        await PlainTextResponse(text, 404)(scope, receive, send)
    return not_found


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
