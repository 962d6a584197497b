"""The code generated from proto/ is checked in; prove it matches the .proto."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from otel_ai.proto.otel_ai.v1 import metrics_view_pb2, otlp_view_pb2

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, generated", [("otlp_view", otlp_view_pb2), ("metrics_view", metrics_view_pb2)])
def test_generated_view_matches_proto_source(tmp_path, name, generated):
    out = tmp_path / "set.pb"
    source = f"proto/otel_ai/v1/{name}.proto"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--descriptor_set_out={out}", str(ROOT / source)]) == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    checked_in = descriptor_pb2.FileDescriptorProto.FromString(generated.DESCRIPTOR.serialized_pb)
    _drop_json_names(compiled)  # protoc fills them in descriptor sets, not in generated code
    assert compiled == checked_in, f"regenerate: python -m grpc_tools.protoc -Iproto --python_out=otel_ai/proto --pyi_out=otel_ai/proto {source}"


def _drop_json_names(file_proto) -> None:
    stack = list(file_proto.message_type)
    while stack:
        message = stack.pop()
        for field in message.field:
            field.ClearField("json_name")
        stack.extend(message.nested_type)


def test_view_parses_real_otlp_requests_field_for_field():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    span = rs.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="GET /x", kind=2,
                                          start_time_unix_nano=5, end_time_unix_nano=9)
    span.attributes.add(key="http.route").value.string_value = "/x"
    span.attributes.add(key="http.response.status_code").value.int_value = 503
    span.status.code = 2
    span.events.add(name="exception").attributes.add(key="exception.type").value.string_value = "KeyError"
    view = otlp_view_pb2.TraceRequestView.FromString(request.SerializeToString())
    got = view.resource_spans[0].scope_spans[0].spans[0]
    assert view.resource_spans[0].resource.attributes["service.name"].string_value == "checkout"
    assert (got.trace_id, got.kind, got.start_time_unix_nano, got.end_time_unix_nano) == (b"\x01" * 16, 2, 5, 9)
    assert got.attributes["http.route"].string_value == "/x"
    assert got.attributes["http.response.status_code"].int_value == 503
    assert got.status.code == 2 and got.events[0].attributes["exception.type"].string_value == "KeyError"


def test_metrics_view_parses_real_otlp_requests_field_for_field():
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "checkout"
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = "io.opentelemetry.http", "1.2"
    histogram = sm.metrics.add(name="http.server.request.duration", unit="s").histogram
    histogram.aggregation_temporality = 2
    point = histogram.data_points.add(start_time_unix_nano=5, time_unix_nano=9, count=3, bucket_counts=[1, 2],
                                      explicit_bounds=[0.1], min=0.05, flags=1)
    point.attributes.add(key="http.response.status_code").value.int_value = 503
    point.exemplars.add(time_unix_nano=7, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, as_double=0.2)
    exponential = sm.metrics.add(name="rpc.server.call.duration").exponential_histogram
    ep = exponential.data_points.add(count=4, scale=-3, zero_count=1, max=9.5)
    ep.positive.offset = -7
    ep.positive.bucket_counts.extend([2, 1])
    sm.metrics.add(name="k8s.pod.cpu_limit_utilization").gauge.data_points.add(time_unix_nano=9, as_int=1)

    view = metrics_view_pb2.MetricsRequestView.FromString(request.SerializeToString())
    got = view.resource_metrics[0].scope_metrics[0]
    assert (got.scope.name, got.scope.version) == ("io.opentelemetry.http", "1.2")
    h = got.metrics[0]
    p = h.histogram.data_points[0]
    assert (h.name, h.unit, h.WhichOneof("data"), h.histogram.aggregation_temporality) == (
        "http.server.request.duration", "s", "histogram", 2)
    assert (p.start_time_unix_nano, p.time_unix_nano, p.count, list(p.bucket_counts), list(p.explicit_bounds),
            p.min, p.HasField("max"), p.flags) == (5, 9, 3, [1, 2], [0.1], 0.05, False, 1)
    assert p.attributes["http.response.status_code"].int_value == 503
    assert (p.exemplars[0].trace_id, p.exemplars[0].span_id, p.exemplars[0].as_double) == (b"\x01" * 16, b"\x02" * 8, 0.2)
    e = got.metrics[1].exponential_histogram.data_points[0]
    assert (e.count, e.scale, e.zero_count, e.positive.offset, list(e.positive.bucket_counts), e.max) == (
        4, -3, 1, -7, [2, 1], 9.5)
    assert got.metrics[2].gauge.data_points[0].as_int == 1
