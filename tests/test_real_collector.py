"""A real OTLP collector between the apps and otel-ai: rotel's agent binary (from the
`rotel` wheel) receives OTLP from an OTel SDK app and from the traffic generator, batches
it, and exports it gzip-compressed over OTLP/HTTP to otel-ai, retrying while otel-ai is
not up yet. The planted fault must still open its incident."""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.testing.harness import wait_for
from otel_ai.testing.send_traffic import recent_traffic, send

SDK_SPANS = 40


def rotel_agent() -> Path:
    rotel = pytest.importorskip("rotel", reason="the rotel collector is not installed (pip install -e '.[test]')")
    binary = Path(rotel.__file__).parent / "rotel-agent"
    if not binary.exists():
        pytest.skip(f"the rotel wheel has no agent binary at {binary}")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Collector:
    def __init__(self, grpc_port: int, http_port: int) -> None:
        self.grpc_port, self.http_port = grpc_port, http_port


@pytest.fixture(scope="module")
def otel_ai_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory, otel_ai_port: int) -> Iterator[Collector]:
    binary = rotel_agent()
    tmp = tmp_path_factory.mktemp("rotel")
    grpc_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{otel_ai_port}",
         "--otlp-exporter-protocol", "http", "--otlp-exporter-compression", "gzip",
         "--batch-max-size", "2000", "--batch-timeout", "500ms",
         "--otlp-exporter-retry-initial-backoff", "200ms", "--otlp-exporter-retry-max-backoff", "1s",
         "--otlp-exporter-retry-max-elapsed-time", "60s",
         "--pid-file", str(tmp / "rotel.pid"), "--log-file", str(tmp / "rotel.log")],
        stdout=open(tmp / "stdout.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for("rotel to listen", lambda: _listening(http_port) and _listening(grpc_port), timeout_s=15)
        yield Collector(grpc_port, http_port)
    finally:
        process.terminate()
        process.wait(timeout=15)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def requests_received(app: App) -> float:
    return sum(s.value for m in app.metrics.requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("transport") == "http")


def spans_received(app: App) -> float:
    return sum(s.value for m in app.metrics.spans_received.collect() for s in m.samples if s.name.endswith("_total"))


def test_sdk_spans_reach_otel_ai_through_the_collector_batched_and_retried(collector: Collector, otel_ai_port: int,
                                                                           tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    # otel-ai is not up yet: the collector has to hold the spans and retry.
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-shop"}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{collector.grpc_port}", insecure=True, timeout=5)))
    tracer = provider.get_tracer("shop")
    for _ in range(SDK_SPANS):  # one export per span: the collector batches them
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("http.route", "/cart")
            span.set_attribute("http.response.status_code", 200)
    provider.shutdown()
    time.sleep(1.0)  # the collector's first attempts fail against the closed port

    app = _otel_ai(tmp_path, otel_ai_port)
    try:
        wait_for("the SDK's spans", lambda: spans_received(app) >= SDK_SPANS, timeout_s=30)
        assert spans_received(app) == SDK_SPANS
        assert requests_received(app) < SDK_SPANS / 4  # batched by the collector
        print(f"\n{SDK_SPANS} SDK exports of one span arrived through rotel in {requests_received(app):.0f} "
              "request(s), after otel-ai came up")
    finally:
        app.stop(grace_s=0)


def test_the_planted_fault_opens_its_incident_through_the_collector(collector: Collector, otel_ai_port: int,
                                                                    tmp_path: Path) -> None:
    app = _otel_ai(tmp_path, otel_ai_port)
    try:
        generator = recent_traffic()
        sent = send(f"http://127.0.0.1:{collector.http_port}", generator)
        planted = generator.faults[0]
        incident = wait_for("the planted incident", lambda: next(
            (i for i in app.store.list() if i.type == "ERROR_RATE_SPIKE"), None), timeout_s=30)
        assert incident.status == "open"
        assert (incident.suspects[0]["key"], incident.suspects[0]["value"]) == ("dependency.failed", planted.target)
        print(f"{sent} app exports -> rotel -> {requests_received(app):.0f} gzip requests to otel-ai; "
              f"incident {incident.type} on {incident.subject.label()}")
    finally:
        app.stop(grace_s=0)


def _otel_ai(tmp_path: Path, http_port: int) -> App:
    settings = load_settings(env={})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.admin.port = 0
    settings.receiver.http_port = http_port
    app = App(settings, tmp_path / "data", console=False, credentials=Credentials())
    app.start()
    return app
