"""OTLP/gRPC receiver: TraceService/Export and MetricsService/Export on a real grpc server.

The request is deserialized here rather than by grpc so that a body that does not
decode becomes INVALID_ARGUMENT (grpc would answer INTERNAL), and status codes follow
the OTLP spec so that Collector exporters retry exactly the retryable failures. Both
signals share the limits, authentication and status handling; only the consumer, the
response message and the counters differ.
"""
from __future__ import annotations

import errno
import hmac
import logging
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from otel_ai.httpserver import ListenError
from otel_ai.receiver.consumer import InvalidRequest, MetricsConsumer, Saturated, TraceConsumer
from otel_ai.receiver.signals import METRICS, TRACES, Signal
from otel_ai.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

TRANSPORT = "grpc"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _raw_bytes(data: bytes) -> bytes:
    return data


class OtlpGrpcReceiver:
    def __init__(
        self,
        consumer: TraceConsumer,
        metrics: SelfMetrics,
        host: str = "127.0.0.1",
        port: int = 4317,
        max_request_bytes: int = 64 * 1024 * 1024,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        bearer_token: str | None = None,
        max_workers: int = 4,
        metrics_consumer: MetricsConsumer | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        self._metrics = metrics
        self._signals = [(TRACES, TRACES.consume_of(consumer))]
        if metrics_consumer is not None:  # without one, MetricsService answers UNIMPLEMENTED
            self._signals.append((METRICS, METRICS.consume_of(metrics_consumer)))
        self._host = host
        self._port = port
        self._max_request_bytes = max_request_bytes
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._expected_authorization = f"Bearer {bearer_token}".encode() if bearer_token else None
        self._max_workers = max_workers
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="otlp-grpc"),
            # grpc refuses bigger messages itself with RESOURCE_EXHAUSTED, before any
            # allocation on our side; it applies to the decompressed size as well.
            # Those refusals never reach export(), so they are not in our counters.
            options=[("grpc.max_receive_message_length", self._max_request_bytes),
                     # On by default in grpc: two servers would then share the port and
                     # split the traffic silently instead of the second one failing.
                     ("grpc.so_reuseport", 0)],
        )
        for signal, consume in self._signals:
            handler = grpc.unary_unary_rpc_method_handler(
                lambda raw, context, signal=signal, consume=consume: self._export(signal, consume, raw, context),
                request_deserializer=_raw_bytes,
                response_serializer=signal.response_type.SerializeToString,
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler}),))
        address = f"{self._host}:{self._port}"
        try:
            if self._tls_cert_file is not None and self._tls_key_file is not None:
                credentials = grpc.ssl_server_credentials(
                    [(Path(self._tls_key_file).read_bytes(), Path(self._tls_cert_file).read_bytes())])
                bound_port = server.add_secure_port(address, credentials)
            else:
                bound_port = server.add_insecure_port(address)
        except RuntimeError:  # newer grpc raises instead of returning 0
            bound_port = 0
        if bound_port == 0:
            raise ListenError(errno.EADDRINUSE,
                              f"OTLP/gRPC receiver: port {self._port} on {self._host} is already in use or not "
                              "available (is another otel-ai running?); choose another with --grpc-port "
                              "(0 = any free port)")
        server.start()
        self._server = server
        log.info("OTLP/gRPC receiver listening on %s:%d%s", self._host, bound_port,
                 " (TLS)" if self._tls_cert_file else "")
        return bound_port

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls; in-flight calls get grace_s to finish."""
        if self._server is None:
            return
        self._server.stop(grace_s).wait()
        self._server = None

    def _export(self, signal: Signal, consume: Callable, raw: bytes, context: grpc.ServicerContext) -> Message:
        if not self._authorized(context):
            self._count(signal, "unauthenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        if len(raw) > self._max_request_bytes:  # grpc enforces this already; kept as a backstop
            self._reject_request(signal, "too_large")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"request of {len(raw)} bytes exceeds {self._max_request_bytes}")

        try:
            result = consume(raw, TRANSPORT)
        except InvalidRequest as exc:
            self._reject_request(signal, "invalid")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode {signal.request_name}: {exc}")
        except Saturated as exc:
            self._count(signal, "unavailable")
            context.set_trailing_metadata(((_STATUS_DETAILS_KEY, _retry_status(exc)),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception:
            # Anything else is our bug, not the sender's: INTERNAL is not retried by
            # exporters, so a poison request cannot loop forever.
            log.exception("OTLP/gRPC export failed inside the pipeline")
            self._count(signal, "error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while processing the request")

        response = signal.response_type()
        self._count(signal, "partial" if signal.partial(response, result) > 0 else "ok")
        return response

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        if self._expected_authorization is None:
            return True
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(presented, self._expected_authorization)
        return False

    def _count(self, signal: Signal, outcome: str) -> None:
        signal.requests(self._metrics).labels(transport=TRANSPORT, outcome=outcome).inc()

    def _reject_request(self, signal: Signal, outcome: str) -> None:
        self._count(signal, outcome)
        # The spans (or data points) in an undecodable or oversize body cannot be
        # counted; the request counts as one so the rejection still shows up next to
        # partial rejections.
        signal.rejected(self._metrics).labels(reason=outcome).inc()


def _retry_status(exc: Saturated) -> bytes:
    """google.rpc.Status carrying RetryInfo, which OTLP exporters use as backoff."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, int(exc.retry_after_s * 1e9)))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(exc))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status.SerializeToString()
