"""The code generated from proto/ is checked in; prove it matches the .proto."""
from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from otel_ai.proto.otel_ai.v1 import otlp_view_pb2

ROOT = Path(__file__).resolve().parents[1]


def test_generated_view_matches_proto_source(tmp_path):
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--descriptor_set_out={out}",
                        str(ROOT / "proto/otel_ai/v1/otlp_view.proto")]) == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    checked_in = descriptor_pb2.FileDescriptorProto.FromString(otlp_view_pb2.DESCRIPTOR.serialized_pb)
    _drop_json_names(compiled)  # protoc fills them in descriptor sets, not in generated code
    assert compiled == checked_in, "regenerate: python -m grpc_tools.protoc -Iproto --python_out=otel_ai/proto --pyi_out=otel_ai/proto proto/otel_ai/v1/otlp_view.proto"


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
