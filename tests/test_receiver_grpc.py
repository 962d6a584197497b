from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.testing.consumers import RecordingConsumer
from tls_certs import self_signed_cert

MAX_BYTES = 1024 * 1024
TOKEN = "s3cret"


FakeConsumer = RecordingConsumer


def one_span_request(name: str = "GET /cart", padding: int = 0) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name)
    if padding:
        span.attributes.add(key="pad").value.string_value = "x" * padding
    return request


def one_point_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="http.server.request.duration")
    metric.histogram.data_points.add(count=1, bucket_counts=[1], time_unix_nano=5)
    return request


def requests_counted(metrics: SelfMetrics, outcome: str, name: str = "otel_ai_export_requests_total") -> float:
    value = metrics.registry.get_sample_value(name, {"transport": "grpc", "outcome": outcome})
    return value or 0.0


def metric_requests_counted(metrics: SelfMetrics, outcome: str) -> float:
    return requests_counted(metrics, outcome, "otel_ai_metric_export_requests_total")


class Running:
    def __init__(self, consumer: FakeConsumer, metrics: SelfMetrics, port: int) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.port = port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = TraceServiceStub(self.channel)
        self.metrics_stub = MetricsServiceStub(self.channel)

    def raw_export(self, body: bytes, **kwargs: object) -> ExportTraceServiceResponse:
        call = self.channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=ExportTraceServiceResponse.FromString)
        return call(body, timeout=5, **kwargs)


def start(**kwargs: object) -> tuple[OtlpGrpcReceiver, FakeConsumer, SelfMetrics, int]:
    consumer, metrics = FakeConsumer(), SelfMetrics()
    kwargs.setdefault("metrics_consumer", consumer)
    receiver = OtlpGrpcReceiver(consumer, metrics, port=0, max_request_bytes=MAX_BYTES, **kwargs)  # type: ignore[arg-type]
    return receiver, consumer, metrics, receiver.start()


@pytest.fixture
def running() -> Iterator[Running]:
    receiver, consumer, metrics, port = start()
    r = Running(consumer, metrics, port)
    yield r
    r.channel.close()
    receiver.stop(grace_s=0)


def test_export_ok(running: Running) -> None:
    response = running.stub.Export(one_span_request(), timeout=5)
    assert not response.HasField("partial_success")
    assert len(running.consumer.requests) == 1
    request, transport = running.consumer.requests[0]
    assert transport == "grpc"
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "GET /cart"
    assert requests_counted(running.metrics, "ok") == 1


def test_partial_success_is_reported(running: Running) -> None:
    running.consumer.rejected_spans = 2
    response = running.stub.Export(one_span_request(), timeout=5)
    assert response.partial_success.rejected_spans == 2
    assert response.partial_success.error_message == "spans too old"
    assert requests_counted(running.metrics, "partial") == 1


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # not protobuf at all
    one_span_request().SerializeToString()[:-3],  # truncated mid-field
])
def test_undecodable_body_is_invalid_argument(running: Running, body: bytes) -> None:
    with pytest.raises(grpc.RpcError) as info:
        running.raw_export(body)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "decode" in info.value.details()
    assert running.consumer.requests == []
    assert requests_counted(running.metrics, "invalid") == 1


def test_oversize_request_is_resource_exhausted(running: Running) -> None:
    with pytest.raises(grpc.RpcError) as info:
        running.stub.Export(one_span_request(padding=MAX_BYTES + 10), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.consumer.requests == []


def test_gzip_request_is_accepted(running: Running) -> None:
    running.stub.Export(one_span_request(padding=100_000), timeout=5, compression=grpc.Compression.Gzip)
    request, _ = running.consumer.requests[0]
    assert len(request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value) == 100_000


def test_gzip_bomb_is_resource_exhausted(running: Running) -> None:
    # Compresses to a few KiB, well under the limit; decompressed it is 4x the limit.
    with pytest.raises(grpc.RpcError) as info:
        running.stub.Export(one_span_request(padding=4 * MAX_BYTES), timeout=5,
                            compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.consumer.requests == []


def test_saturated_is_unavailable_with_retry_info(running: Running) -> None:
    running.consumer.saturated_for_s = 2.5
    with pytest.raises(grpc.RpcError) as info:
        running.stub.Export(one_span_request(), timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert retry_info.retry_delay.ToMilliseconds() == 2500
    assert requests_counted(running.metrics, "unavailable") == 1


def test_bearer_token_is_required_when_configured() -> None:
    receiver, consumer, metrics, port = start(bearer_token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = TraceServiceStub(channel)
            for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)]:
                with pytest.raises(grpc.RpcError) as info:
                    stub.Export(one_span_request(), timeout=5, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert consumer.requests == []
            stub.Export(one_span_request(), timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert len(consumer.requests) == 1
            assert requests_counted(metrics, "unauthenticated") == 3
    finally:
        receiver.stop(grace_s=0)


def test_sdk_exporter_delivers_a_span(running: Running) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{running.port}", insecure=True, timeout=5)))
    with provider.get_tracer("test").start_as_current_span("sdk-span"):
        pass
    provider.shutdown()

    request, _ = running.consumer.requests[0]
    resource_spans = request.resource_spans[0]
    assert resource_spans.scope_spans[0].spans[0].name == "sdk-span"
    assert {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"] == "sdk-app"


# ------------------------------------------------------------ MetricsService

def test_metrics_export_ok(running: Running) -> None:
    response = running.metrics_stub.Export(one_point_request(), timeout=5)
    assert not response.HasField("partial_success")
    [(request, transport)] = running.consumer.metric_requests
    assert transport == "grpc" and request == one_point_request()
    assert running.consumer.requests == []
    assert metric_requests_counted(running.metrics, "ok") == 1
    assert requests_counted(running.metrics, "ok") == 0  # trace requests are counted apart


def test_metrics_partial_success_is_reported(running: Running) -> None:
    running.consumer.rejected_data_points = 3
    response = running.metrics_stub.Export(one_point_request(), timeout=5)
    assert response.partial_success.rejected_data_points == 3
    assert response.partial_success.error_message == "data points without a time"
    assert metric_requests_counted(running.metrics, "partial") == 1


def test_undecodable_metrics_body_is_invalid_argument(running: Running) -> None:
    call = running.channel.unary_unary(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        request_serializer=lambda b: b, response_deserializer=ExportMetricsServiceResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(one_point_request().SerializeToString()[:-2], timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportMetricsServiceRequest" in info.value.details()
    assert metric_requests_counted(running.metrics, "invalid") == 1
    assert running.metrics.registry.get_sample_value("otel_ai_data_points_rejected_total", {"reason": "invalid"}) == 1


def test_saturated_metrics_are_unavailable_with_retry_info(running: Running) -> None:
    running.consumer.saturated_for_s = 1.5
    with pytest.raises(grpc.RpcError) as info:
        running.metrics_stub.Export(one_point_request(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    status = status_pb2.Status.FromString(dict(info.value.trailing_metadata())["grpc-status-details-bin"])
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info) and retry_info.retry_delay.ToMilliseconds() == 1500


def test_oversize_metrics_request_is_resource_exhausted(running: Running) -> None:
    request = one_point_request()
    point = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    point.attributes.add(key="pad").value.string_value = "x" * (MAX_BYTES + 10)
    with pytest.raises(grpc.RpcError) as info:
        running.metrics_stub.Export(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.consumer.metric_requests == []


def test_metrics_need_the_bearer_token_too() -> None:
    receiver, consumer, metrics, port = start(bearer_token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = MetricsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(one_point_request(), timeout=5, metadata=(("authorization", "Bearer wrong"),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(one_point_request(), timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert len(consumer.metric_requests) == 1
        assert metric_requests_counted(metrics, "unauthenticated") == 1
    finally:
        receiver.stop(grace_s=0)


def test_without_a_metrics_consumer_metrics_are_unimplemented() -> None:
    receiver, consumer, _, port = start(metrics_consumer=None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                MetricsServiceStub(channel).Export(one_point_request(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            TraceServiceStub(channel).Export(one_span_request(), timeout=5)
        assert len(consumer.requests) == 1
    finally:
        receiver.stop(grace_s=0)


def test_tls(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_cert(tmp_path)
    receiver, consumer, _, port = start(tls_cert_file=cert_file, tls_key_file=key_file)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            TraceServiceStub(channel).Export(one_span_request(), timeout=5)
        assert len(consumer.requests) == 1
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            with pytest.raises(grpc.RpcError):
                TraceServiceStub(plaintext).Export(one_span_request(), timeout=2)
        assert len(consumer.requests) == 1
    finally:
        receiver.stop(grace_s=0)
