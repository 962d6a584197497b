"""A loopback OTLP/HTTP receiver that keeps what it gets: traces, logs and metrics.

For tests (and users) of what otel-ai sends back into OpenTelemetry: point
OTEL_EXPORTER_OTLP_ENDPOINT at `capture.url` (protocol http/protobuf) and read
`capture.spans()`, `capture.log_records()` and `capture.metrics` afterwards. By hand:

    python -m otel_ai.testing.otlp_capture --port 4319     # prints one line per export
"""
from __future__ import annotations

import argparse
import gzip
import threading
from collections import Counter
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_ai.testing.loopback import LoopbackFake, LoopbackHandler, LoopbackServer, serve_from_cli

_SIGNALS = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}
MAX_REQUESTS = 10_000


class OtlpCapture(LoopbackFake):
    thread_name = "otlp-capture"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.handler = _Handler
        self._lock = threading.Lock()
        self.requests: dict[str, list[Any]] = {path: [] for path in _SIGNALS}

    @property
    def url(self) -> str:
        return self.base_url

    def keep(self, path: str, message: Any) -> None:
        with self._lock:
            kept = self.requests[path]
            kept.append(message)
            del kept[:-MAX_REQUESTS]

    def spans(self) -> list[tuple[dict, Any]]:
        """(resource attributes, span) of every span received."""
        with self._lock:
            requests = list(self.requests["/v1/traces"])
        return [(attributes(rs.resource.attributes), span) for r in requests for rs in r.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def log_records(self) -> list[tuple[dict, Any]]:
        with self._lock:
            requests = list(self.requests["/v1/logs"])
        return [(attributes(rl.resource.attributes), record) for r in requests for rl in r.resource_logs
                for sl in rl.scope_logs for record in sl.log_records]

    @property
    def metrics(self) -> list[Any]:
        with self._lock:
            return list(self.requests["/v1/metrics"])


def attributes(key_values) -> dict[str, Any]:
    """Span, log or resource attributes as a plain dict."""
    out = {}
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind else None
    return out


class _Handler(LoopbackHandler):
    server: LoopbackServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        signal = _SIGNALS.get(self.path.split("?")[0])
        if signal is None or self.command != "POST":
            self._answer(404, b"")
            return
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        request_type, response_type = signal
        try:
            message = request_type.FromString(body)
        except Exception:  # noqa: BLE001 - any undecodable body is the client's problem
            self._answer(400, b"")
            return
        self.server.fake.keep(self.path.split("?")[0], message)
        self.server.fake._echo(lambda: describe_request(self.path.split("?")[0], message))
        self._answer(200, response_type().SerializeToString())

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def describe_request(path: str, message: Any) -> str:
    """One line per export: the signal, how many items, and the names seen most."""
    if path == "/v1/traces":
        names = [span.name for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
        kind = "spans"
    elif path == "/v1/logs":
        names = [record.event_name or record.body.string_value[:40] for rl in message.resource_logs
                 for sl in rl.scope_logs for record in sl.log_records]
        kind = "log records"
    else:
        names = [metric.name for rm in message.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics]
        kind = "metrics"
    common = ", ".join(f"{name or '?'} x{n}" if n > 1 else name or "?" for name, n in Counter(names).most_common(4))
    return f"{path} {len(names)} {kind}: {common}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.otlp_capture",
                                     description="Receive OTLP/HTTP (protobuf) traces, logs and metrics on "
                                                 "loopback and print one line per export.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4319, help="0 picks a free port; the URL printed has it")
    args = parser.parse_args(argv)
    capture = OtlpCapture(args.host, args.port)
    return serve_from_cli(capture, lambda: f"OTLP capture on {capture.url} (export OTEL_EXPORTER_OTLP_ENDPOINT="
                                          f"{capture.url} OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)")


if __name__ == "__main__":
    raise SystemExit(main())
