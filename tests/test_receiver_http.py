from __future__ import annotations

import gzip
import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_ai.receiver.consumer import ExportResult
from otel_ai.receiver.http_server import OtlpHttpReceiver
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.testing.consumers import RecordingConsumer
from tls_certs import self_signed_cert
from otel_ai.testing.otlp_http import decode_status

MAX_BYTES = 1024 * 1024
TOKEN = "s3cret"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


FakeConsumer = RecordingConsumer


def one_span_request(name: str = "GET /cart", padding: int = 0) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"), span_id=bytes.fromhex("eee19b7ec3c1b174"),
        name=name, start_time_unix_nano=1_700_000_000_000_000_000)
    if padding:
        span.attributes.add(key="pad").value.string_value = "x" * padding
    return request


class Running:
    def __init__(self, consumer: FakeConsumer, metrics: SelfMetrics, port: int, scheme: str = "http") -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}/v1/traces"

    def post(self, body: bytes, content_type: str = PROTOBUF, headers: dict[str, str] | None = None,
             url: str | None = None, method: str = "POST",
             context: ssl.SSLContext | None = None) -> tuple[int, Message, bytes]:
        """Status, headers (names case-insensitive, as in HTTP) and body."""
        request = urllib.request.Request(url or self.url, data=body, method=method,
                                         headers={"Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def counted(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "otel_ai_export_requests_total", {"transport": "http", "outcome": outcome})
        return value or 0.0


def start(**kwargs: object) -> tuple[OtlpHttpReceiver, Running]:
    consumer, metrics = FakeConsumer(), SelfMetrics()
    receiver = OtlpHttpReceiver(consumer, metrics, port=0, max_request_bytes=MAX_BYTES, **kwargs)  # type: ignore[arg-type]
    port = receiver.start()
    return receiver, Running(consumer, metrics, port, "https" if "tls_cert_file" in kwargs else "http")


@pytest.fixture
def running() -> Iterator[Running]:
    receiver, r = start()
    yield r
    receiver.stop(grace_s=0)


def test_protobuf_ok(running: Running) -> None:
    status, headers, body = running.post(one_span_request().SerializeToString())
    assert status == 200
    assert headers["Content-Type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    request, transport = running.consumer.requests[0]
    assert transport == "http"
    assert request == one_span_request()
    assert running.counted("ok") == 1


def test_json_ok_with_charset_parameter(running: Running) -> None:
    body = to_otlp_json(one_span_request()).encode()
    status, headers, response = running.post(body, content_type="application/json; charset=utf-8")
    assert status == 200
    assert headers["Content-Type"] == JSON
    assert json.loads(response) == {}
    assert running.consumer.requests[0][0] == one_span_request()


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_partial_success(running: Running, content_type: str) -> None:
    running.consumer.rejected_spans = 3
    request = one_span_request()
    body = request.SerializeToString() if content_type == PROTOBUF else to_otlp_json(request).encode()
    status, _, response = running.post(body, content_type=content_type)
    assert status == 200
    if content_type == JSON:
        assert json.loads(response) == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "spans too old"}}
    else:
        partial = ExportTraceServiceResponse.FromString(response).partial_success
        assert (partial.rejected_spans, partial.error_message) == (3, "spans too old")
    assert running.counted("partial") == 1


@pytest.mark.parametrize("body, content_type", [
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", PROTOBUF),
    (one_span_request().SerializeToString()[:-3], PROTOBUF),
    (b'{"resourceSpans": [', JSON),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}', JSON),
])
def test_undecodable_body_is_400_with_status(running: Running, body: bytes, content_type: str) -> None:
    status, headers, response = running.post(body, content_type=content_type)
    assert status == 400
    assert headers["Content-Type"] == content_type
    rpc_status = decode_status(response, content_type)
    assert rpc_status.code == 3  # INVALID_ARGUMENT
    assert rpc_status.message
    assert running.consumer.requests == []
    assert running.counted("invalid") == 1


def test_oversize_body_is_413(running: Running) -> None:
    status, _, response = running.post(one_span_request(padding=2 * MAX_BYTES).SerializeToString())
    assert status == 413
    assert decode_status(response).code == 8  # RESOURCE_EXHAUSTED
    assert running.consumer.requests == []
    assert running.counted("too_large") == 1


def test_oversize_chunked_body_is_413_while_reading(running: Running) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
    chunks = iter([b"\x00" * 256 * 1024] * 8)  # 2 MiB, no Content-Length
    connection.request("POST", "/v1/traces", body=chunks, headers={"Content-Type": PROTOBUF},
                       encode_chunked=True)
    assert connection.getresponse().status == 413
    connection.close()


def test_chunked_body_within_limit_is_accepted(running: Running) -> None:
    data = one_span_request(padding=300_000).SerializeToString()
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
    connection.request("POST", "/v1/traces", body=iter([data[:1000], data[1000:]]),
                       headers={"Content-Type": PROTOBUF}, encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert running.consumer.requests[0][0] == one_span_request(padding=300_000)


def test_gzip_body_is_accepted(running: Running) -> None:
    body = gzip.compress(one_span_request(padding=50_000).SerializeToString())
    status, _, _ = running.post(body, headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert running.consumer.requests[0][0] == one_span_request(padding=50_000)


def test_gzip_bomb_is_413(running: Running) -> None:
    bomb = gzip.compress(b"\x00" * (16 * MAX_BYTES), compresslevel=9)
    assert len(bomb) < MAX_BYTES // 4
    status, _, _ = running.post(bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert running.consumer.requests == []


def test_corrupt_gzip_is_400(running: Running) -> None:
    body = gzip.compress(one_span_request().SerializeToString())
    status, _, _ = running.post(body[:-10], headers={"Content-Encoding": "gzip"})
    assert status == 400
    status, _, _ = running.post(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert running.consumer.requests == []


def test_unsupported_content_type_is_415(running: Running) -> None:
    status, _, _ = running.post(b"hello", content_type="text/plain")
    assert status == 415
    assert running.counted("unsupported_media_type") == 1


def test_saturated_is_503_with_retry_after(running: Running) -> None:
    running.consumer.saturated_for_s = 2.6
    status, headers, response = running.post(one_span_request().SerializeToString())
    assert status == 503
    assert headers["Retry-After"] == "3"
    assert decode_status(response).code == 14  # UNAVAILABLE
    assert running.counted("unavailable") == 1


def test_wrong_method_and_path(running: Running) -> None:
    assert running.post(b"", method="GET")[0] == 405
    assert running.post(b"", method="PUT")[0] == 405
    assert running.post(one_span_request().SerializeToString(), url=running.url.replace("traces", "logs"))[0] == 404
    assert running.consumer.requests == []


def test_keep_alive_connection_survives_a_rejection(running: Running) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
    connection.request("POST", "/v1/traces", body=b"\xff\xff\xff", headers={"Content-Type": PROTOBUF})
    first = connection.getresponse()
    first.read()
    connection.request("POST", "/v1/traces", body=one_span_request().SerializeToString(),
                       headers={"Content-Type": PROTOBUF})
    second = connection.getresponse()
    second.read()
    connection.close()
    assert (first.status, second.status) == (400, 200)


def test_bearer_token() -> None:
    receiver, r = start(bearer_token=TOKEN)
    try:
        body = one_span_request().SerializeToString()
        assert r.post(body)[0] == 401
        assert r.post(body, headers={"Authorization": "Bearer nope"})[0] == 401
        assert r.post(body, headers={"Authorization": TOKEN})[0] == 401
        assert r.consumer.requests == []
        assert r.post(body, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert len(r.consumer.requests) == 1
        assert r.counted("unauthenticated") == 3
    finally:
        receiver.stop(grace_s=0)


def test_consumer_crash_is_500_and_server_keeps_serving(running: Running) -> None:
    def crash(request: ExportTraceServiceRequest, transport: str) -> ExportResult:
        raise RuntimeError("bug")

    running.consumer.consume = crash  # type: ignore[method-assign]
    status, _, response = running.post(one_span_request().SerializeToString())
    assert status == 500
    assert decode_status(response).code == 13  # INTERNAL
    del running.consumer.consume
    assert running.post(one_span_request().SerializeToString())[0] == 200


def test_sdk_exporter_delivers_a_span(running: Running) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=running.url, timeout=5)))
    with provider.get_tracer("test").start_as_current_span("sdk-span"):
        pass
    provider.shutdown()

    request, _ = running.consumer.requests[0]
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "sdk-span"


def test_tls(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_cert(tmp_path)
    receiver, r = start(tls_cert_file=cert_file, tls_key_file=key_file)
    try:
        # A silent client that never handshakes must not block other connections.
        import socket
        idle = socket.create_connection(("127.0.0.1", r.port))
        context = ssl.create_default_context(cafile=str(cert_file))
        status, _, _ = r.post(one_span_request().SerializeToString(), context=context)
        idle.close()
        assert status == 200
        assert len(r.consumer.requests) == 1
        plaintext = r.url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            r.post(one_span_request().SerializeToString(), url=plaintext)
    finally:
        receiver.stop(grace_s=0)
