"""Bad input through the real receivers and the pipeline: every malformed or
implausible request gets its documented answer and a rejected-span count, nothing
crashes, and the server keeps serving valid requests afterwards."""
from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import code_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from otel_ai.app import App, Credentials
from otel_ai.config import Settings, load_settings
from otel_ai.histogram import BINS
from otel_ai.model import ROUTE
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.consumer import ExportResult, InvalidRequest
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.store import IncidentStore
from otel_ai.subjects import OVERFLOW_ROUTE, OVERFLOW_SERVICE
from otel_ai.testing.otlp_http import decode_status

MAX_BYTES = 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
NS_PER_YEAR = 365 * 24 * 3600 * 10**9
YEAR_1990_NS = 631_152_000 * 10**9
YEAR_2100_NS = 4_102_444_800 * 10**9


# ---------------------------------------------------------------- request builders

@dataclass
class SpanSpec:
    route: str = "/cart"
    method: str = "GET"
    status_code: int = 200
    start_ns: int | None = None
    end_ns: int | None = None


def build_request(spans_by_service: dict[str | None, list[SpanSpec]]) -> ExportTraceServiceRequest:
    """SERVER spans with the HTTP semantic attributes; service None = no service.name."""
    request = ExportTraceServiceRequest()
    now = time.time_ns()
    for service, specs in spans_by_service.items():
        resource_spans = request.resource_spans.add()
        if service is not None:
            resource_spans.resource.attributes.add(key="service.name").value.string_value = service
        resource_spans.resource.attributes.add(key="host.name").value.string_value = "host-1"
        spans = resource_spans.scope_spans.add().spans
        for i, spec in enumerate(specs):
            end = now - 1_000_000 if spec.end_ns is None else spec.end_ns
            start = end - 20_000_000 if spec.start_ns is None else spec.start_ns
            span = spans.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                             name=f"{spec.method} {spec.route}", kind=2,
                             start_time_unix_nano=start, end_time_unix_nano=end)
            span.attributes.add(key="http.request.method").value.string_value = spec.method
            span.attributes.add(key="http.route").value.string_value = spec.route
            span.attributes.add(key="http.response.status_code").value.int_value = spec.status_code
    return request


def valid_request(n: int = 3, service: str = "checkout") -> ExportTraceServiceRequest:
    return build_request({service: [SpanSpec(route=f"/r{i}") for i in range(n)]})


def random_garbage(seed: int, size: int = 512) -> bytes:
    return random.Random(seed).randbytes(size)


def truncated_request() -> bytes:
    body = valid_request(5).SerializeToString()
    return body[: len(body) // 2]


def non_utf8_request() -> bytes:
    """A request whose span name holds b"\\xff\\xfe": serialize with a same-length
    placeholder, then swap the bytes in (protobuf would refuse to build it)."""
    request = build_request({"checkout": [SpanSpec()]})
    request.resource_spans[0].scope_spans[0].spans[0].name = "@@"
    body = request.SerializeToString()
    assert body.count(b"@@") == 1
    return body.replace(b"@@", b"\xff\xfe")


# ---------------------------------------------------------------- the running App

def make_settings(**limits: int) -> Settings:
    settings = load_settings(env={})
    settings.receiver.host = "127.0.0.1"
    settings.receiver.grpc_port = 0
    settings.receiver.http_port = 0
    settings.receiver.max_request_bytes = MAX_BYTES
    settings.admin.host = "127.0.0.1"
    settings.admin.port = 0
    for key, value in limits.items():
        setattr(settings.limits, key, value)
    return settings




class Client:
    def __init__(self, app: App) -> None:
        self.app = app
        assert app.ports is not None
        self.http_port = app.ports.http
        self.channel = grpc.insecure_channel(f"127.0.0.1:{app.ports.grpc}")
        self.stub = TraceServiceStub(self.channel)
        self._raw = self.channel.unary_unary(EXPORT_METHOD, request_serializer=lambda b: b,
                                             response_deserializer=ExportTraceServiceResponse.FromString)

    def grpc_raw(self, body: bytes) -> ExportTraceServiceResponse:
        return self._raw(body, timeout=10)

    def grpc_error(self, body: bytes) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            self.grpc_raw(body)
        return info.value

    def post(self, body: bytes, content_type: str = PROTOBUF) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def rejected(self, reason: str) -> float:
        return self.app.metrics.registry.get_sample_value(
            "otel_ai_spans_rejected_total", {"reason": reason}) or 0.0

    def received(self, transport: str) -> float:
        return self.app.metrics.registry.get_sample_value(
            "otel_ai_spans_received_total", {"transport": transport}) or 0.0

    def assert_still_serving(self) -> None:
        """A valid request succeeds on both transports, with no partial rejection."""
        grpc_before, http_before = self.received("grpc"), self.received("http")
        response = self.stub.Export(valid_request(2), timeout=10)
        assert not response.HasField("partial_success")
        status, body = self.post(valid_request(2).SerializeToString())
        assert status == 200, body
        assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
        assert self.received("grpc") == grpc_before + 2
        assert self.received("http") == http_before + 2


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    app = App(make_settings(), tmp_path_factory.mktemp("bad-input"), console=False, credentials=Credentials())
    app.start()
    c = Client(app)
    c.assert_still_serving()
    yield c
    c.channel.close()
    app.stop(grace_s=0)


http_status_message = decode_status


# ---------------------------------------------------------------- undecodable bodies

UNDECODABLE = {
    "random_bytes": lambda: random_garbage(1),
    "random_bytes_2": lambda: random_garbage(2, 64),
    "truncated_protobuf": truncated_request,
    "non_utf8_string": non_utf8_request,
}


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_protobuf_over_grpc_is_invalid_argument(client: Client, name: str) -> None:
    body = UNDECODABLE[name]()
    before = client.rejected("invalid")
    error = client.grpc_error(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in error.details()
    assert client.rejected("invalid") == before + 1
    client.assert_still_serving()


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_protobuf_over_http_is_400(client: Client, name: str) -> None:
    body = UNDECODABLE[name]()
    before = client.rejected("invalid")
    status, response = client.post(body)
    assert status == 400
    assert http_status_message(response).code == code_pb2.INVALID_ARGUMENT
    assert client.rejected("invalid") == before + 1
    client.assert_still_serving()


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_protobuf_to_consume_is_invalid_request(tmp_path: Path, name: str) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    with pytest.raises(InvalidRequest):
        pipeline.consume(UNDECODABLE[name](), "test")
    assert pipeline.queue_depth() == 0
    # The same pipeline still takes a valid request.
    result = pipeline.consume(valid_request(4).SerializeToString(), "test")
    assert result == ExportResult(0, "", spans=4)
    assert pipeline.queue_depth() == 1


def test_truncation_anywhere_is_invalid_not_a_crash(tmp_path: Path) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    body = valid_request(2).SerializeToString()
    for cut in range(1, len(body)):
        try:
            result = pipeline.consume(body[:cut], "test")
        except InvalidRequest:
            continue
        # A cut on a field boundary can be a valid, shorter request.
        assert isinstance(result, ExportResult)
        assert result.rejected_spans <= 2


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"resourceSpans": [',
    b"[1, 2, 3]",
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
    b'{"resourceSpans": "nope"}',
    b'{"resourceSpans": []}\xff\xfe',
    "[" * 100_000,
], ids=["unterminated", "cut", "array", "bad_trace_id", "wrong_shape", "non_utf8", "deep_nesting"])
def test_broken_json_over_http_is_400(client: Client, body: bytes | str) -> None:
    if isinstance(body, str):
        body = body.encode()
    before = client.rejected("invalid")
    status, response = client.post(body, JSON)
    assert status == 400
    assert http_status_message(response, JSON).code == code_pb2.INVALID_ARGUMENT
    assert client.rejected("invalid") == before + 1
    client.assert_still_serving()


def test_valid_json_still_accepted_after_broken_json(client: Client) -> None:
    status, _ = client.post(b"{oops", JSON)
    assert status == 400
    before = client.received("http")
    status, response = client.post(to_otlp_json(valid_request(3)).encode(), JSON)
    assert status == 200
    assert json.loads(response) == {}
    assert client.received("http") == before + 3


# ---------------------------------------------------------------- oversize bodies

def oversize_request() -> bytes:
    request = valid_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="padding").value.string_value = "x" * MAX_BYTES
    body = request.SerializeToString()
    assert len(body) > MAX_BYTES
    return body


def test_oversize_body_over_http_is_413(client: Client) -> None:
    before = client.rejected("too_large")
    status, response = client.post(oversize_request())
    assert status == 413
    assert http_status_message(response).code == code_pb2.RESOURCE_EXHAUSTED
    assert client.rejected("too_large") == before + 1
    client.assert_still_serving()


def test_oversize_body_over_grpc_is_resource_exhausted(client: Client) -> None:
    # grpc refuses it itself (grpc.max_receive_message_length) before export() runs;
    # the module documents that such refusals are not in otel-ai's counters.
    received = client.received("grpc")
    error = client.grpc_error(oversize_request())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.received("grpc") == received
    client.assert_still_serving()


def test_body_just_under_the_limit_is_accepted(client: Client) -> None:
    request = valid_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    pad = span.attributes.add(key="padding")
    pad.value.string_value = "x" * (MAX_BYTES - 2048)
    assert len(request.SerializeToString()) <= MAX_BYTES
    status, _ = client.post(request.SerializeToString())
    assert status == 200
    response = client.stub.Export(request, timeout=10)
    assert not response.HasField("partial_success")


# ---------------------------------------------------------------- implausible spans

def mixed_request(bad: list[SpanSpec], good: int) -> ExportTraceServiceRequest:
    return build_request({"checkout": bad + [SpanSpec(route=f"/ok{i}") for i in range(good)]})


def end_before_start(n: int) -> list[SpanSpec]:
    now = time.time_ns()
    return [SpanSpec(route="/backwards", start_ns=now - 1_000_000, end_ns=now - 5_000_000) for _ in range(n)]


def years_off() -> list[SpanSpec]:
    return [
        SpanSpec(route="/old", start_ns=YEAR_1990_NS - 1_000_000, end_ns=YEAR_1990_NS),
        SpanSpec(route="/future", start_ns=YEAR_2100_NS - 1_000_000, end_ns=YEAR_2100_NS),
        SpanSpec(route="/last-year", end_ns=time.time_ns() - NS_PER_YEAR),
    ]


@pytest.mark.parametrize("bad_spans, reason", [
    (lambda: end_before_start(3), "3 with end before start"),
    (years_off, "3 with end time too far from now"),
], ids=["end_before_start", "years_off"])
def test_implausible_times_are_partial_success_over_grpc(client: Client, bad_spans, reason) -> None:
    before, received = client.rejected("invalid_span"), client.received("grpc")
    response = client.stub.Export(mixed_request(bad_spans(), good=2), timeout=10)
    assert response.partial_success.rejected_spans == 3
    assert reason in response.partial_success.error_message
    assert client.rejected("invalid_span") == before + 3
    assert client.received("grpc") == received + 2
    client.assert_still_serving()


def test_end_before_start_is_partial_success_over_http(client: Client) -> None:
    before = client.rejected("invalid_span")
    status, body = client.post(mixed_request(end_before_start(4), good=1).SerializeToString())
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 4
    assert "end before start" in response.partial_success.error_message
    assert client.rejected("invalid_span") == before + 4
    client.assert_still_serving()


def test_timestamps_years_off_are_partial_success_over_http_json(client: Client) -> None:
    before = client.rejected("invalid_span")
    body = to_otlp_json(mixed_request(years_off(), good=1)).encode()
    status, response = client.post(body, JSON)
    assert status == 200
    partial = json.loads(response)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 3
    assert "too far from now" in partial["errorMessage"]
    assert client.rejected("invalid_span") == before + 3
    client.assert_still_serving()


def test_missing_and_zero_times_are_rejected(tmp_path: Path) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    now = time.time_ns()
    bad = [SpanSpec(route="/zero", start_ns=0, end_ns=0), SpanSpec(route="/no-start", start_ns=0, end_ns=now)]
    result = pipeline.consume(mixed_request(bad, good=1).SerializeToString(), "test")
    assert result.rejected_spans == 2
    assert "missing times" in result.error_message
    assert pipeline.metrics.registry.get_sample_value(
        "otel_ai_spans_rejected_total", {"reason": "invalid_span"}) == 2
    assert pipeline.metrics.registry.get_sample_value(
        "otel_ai_spans_received_total", {"transport": "test"}) == 1


def test_all_reasons_reported_together(tmp_path: Path) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    result = pipeline.consume(mixed_request(end_before_start(2) + years_off(), good=1).SerializeToString(), "t")
    assert result.rejected_spans == 5
    assert "2 with end before start" in result.error_message
    assert "3 with end time too far from now" in result.error_message


@pytest.mark.parametrize("field", ["end", "start"])
def test_time_beyond_int64_is_rejected_span_not_a_crash(tmp_path: Path, field: str) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    now = time.time_ns()
    huge = 2**64 - 1
    spec = SpanSpec(route="/huge", start_ns=huge if field == "start" else now - 1000,
                    end_ns=huge if field == "end" else now)
    result = pipeline.consume(mixed_request([spec], good=1).SerializeToString(), "test")
    assert result.rejected_spans == 1


def test_time_beyond_int64_over_grpc_is_partial_success(client: Client) -> None:
    spec = SpanSpec(route="/huge", start_ns=time.time_ns(), end_ns=2**64 - 1)
    response = client.stub.Export(mixed_request([spec], good=1), timeout=10)
    assert response.partial_success.rejected_spans == 1


def test_server_survives_time_beyond_int64(client: Client) -> None:
    """Whatever the answer to the bug above, the server must keep serving."""
    spec = SpanSpec(route="/huge", start_ns=time.time_ns(), end_ns=2**64 - 1)
    body = mixed_request([spec], good=1).SerializeToString()
    try:
        client.grpc_raw(body)
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    status, _ = client.post(body)
    assert status in (200, 400, 500)
    client.assert_still_serving()


@pytest.mark.parametrize("text", ["²", "¹²³", "①"])
def test_unicode_digit_status_code_does_not_crash(tmp_path: Path, text: str) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    request = valid_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    status = next(a for a in span.attributes if a.key == "http.response.status_code")
    status.value.string_value = text
    result = pipeline.consume(request.SerializeToString(), "test")
    assert result.rejected_spans == 0


# ---------------------------------------------------------------- cardinality

def window_row_bytes(pipeline: Pipeline) -> int:
    return pipeline.windows.ring * (len(pipeline.windows.values) + BINS) * np.dtype(np.float32).itemsize


def window_bytes(pipeline: Pipeline) -> int:
    return sum(v.nbytes for v in pipeline.windows.values.values()) + pipeline.windows.hist.nbytes


def feed_routes(pipeline: Pipeline, routes: list[tuple[str, str]], batch: int = 5000) -> int:
    rejected = 0
    for offset in range(0, len(routes), batch):
        by_service: dict[str | None, list[SpanSpec]] = {}
        for service, route in routes[offset:offset + batch]:
            by_service.setdefault(service, []).append(SpanSpec(route=route))
        result = pipeline.feed(build_request(by_service).SerializeToString())
        rejected += result.rejected_spans
    return rejected


def test_100k_routes_in_one_service_are_capped(tmp_path: Path) -> None:
    settings = make_settings()
    limits = settings.limits
    pipeline = Pipeline(settings, IncidentStore(tmp_path / "i.db"), [])
    n = 100_000
    assert feed_routes(pipeline, [("api", f"/items/{i}") for i in range(n)]) == 0
    pipeline.flush()

    api = [s for s in pipeline.subjects.subjects if s.service == "api"]
    assert len(api) == limits.max_routes_per_service + 1  # + the service's overflow route
    assert sum(s.route == OVERFLOW_ROUTE for s in api) == 1
    assert len(pipeline.subjects) <= limits.max_subjects
    assert pipeline.subjects.overflowed == n - limits.max_routes_per_service
    # Nothing is lost: the extra routes are counted in the overflow subject.
    overflow = pipeline.subjects.lookup(next(s for s in api if s.route == OVERFLOW_ROUTE))
    assert pipeline.windows.values["requests"].sum() == n
    assert pipeline.windows.values["requests"][overflow].sum() == n - limits.max_routes_per_service
    # Window memory follows the subject count, not the route count.
    assert pipeline.windows.rows <= 2 * len(pipeline.subjects)
    assert window_bytes(pipeline) <= 2 * len(pipeline.subjects) * window_row_bytes(pipeline)


def test_100k_routes_across_many_services_are_capped(tmp_path: Path) -> None:
    settings = make_settings(max_routes_per_service=50, max_subjects=3000)
    limits = settings.limits
    pipeline = Pipeline(settings, IncidentStore(tmp_path / "i.db"), [])
    n, services = 100_000, 1000
    routes = [(f"svc-{i % services}", f"/r/{i}") for i in range(n)]
    assert feed_routes(pipeline, routes) == 0
    pipeline.flush()

    subjects = pipeline.subjects.subjects
    assert len(pipeline.subjects) == limits.max_subjects
    per_service: dict[str, int] = {}
    for s in subjects:
        per_service[s.service] = per_service.get(s.service, 0) + 1
    assert max(per_service.values()) <= limits.max_routes_per_service + 1
    assert sum(s.service == OVERFLOW_SERVICE for s in subjects) == 1
    assert all(s.kind == ROUTE for s in subjects)
    assert pipeline.windows.values["requests"].sum() == n  # every span counted somewhere
    assert pipeline.windows.values["requests"][0].sum() > 0  # the global overflow took the rest
    bound = 2 * limits.max_subjects * window_row_bytes(pipeline)
    assert window_bytes(pipeline) <= bound

    # More of the same does not grow anything.
    rows, size = pipeline.windows.rows, len(pipeline.subjects)
    feed_routes(pipeline, [(f"late-{i}", f"/x/{i}") for i in range(20_000)])
    assert pipeline.windows.rows == rows
    assert len(pipeline.subjects) == size


def test_window_rows_never_exceed_max_subjects(tmp_path: Path) -> None:
    settings = make_settings(max_routes_per_service=50, max_subjects=3000)
    pipeline = Pipeline(settings, IncidentStore(tmp_path / "i.db"), [])
    # Small batches: the subject table (and so the arrays) grows gradually.
    feed_routes(pipeline, [(f"svc-{i % 200}", f"/r/{i}") for i in range(20_000)], batch=100)
    pipeline.flush()
    assert len(pipeline.subjects) == settings.limits.max_subjects
    assert pipeline.windows.rows <= settings.limits.max_subjects


# ---------------------------------------------------------------- missing service.name

def test_missing_service_name_is_counted_as_unknown_service(tmp_path: Path) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    request = build_request({None: [SpanSpec(route="/a"), SpanSpec(route="/a"), SpanSpec(route="/b")]})
    result = pipeline.feed(request.SerializeToString(), "test")
    assert result == ExportResult(0, "", spans=3)
    assert pipeline.metrics.registry.get_sample_value(
        "otel_ai_spans_received_total", {"transport": "test"}) == 3
    unknown = {s.route: i for i, s in enumerate(pipeline.subjects.subjects) if s.service == "unknown_service"}
    assert set(unknown) == {"/a", "/b"}
    assert pipeline.windows.values["requests"][unknown["/a"]].sum() == 2
    assert pipeline.windows.values["requests"][unknown["/b"]].sum() == 1


def test_empty_service_name_is_unknown_service(tmp_path: Path) -> None:
    pipeline = Pipeline(make_settings(), IncidentStore(tmp_path / "i.db"), [])
    request = build_request({"": [SpanSpec(route="/c")]})
    pipeline.feed(request.SerializeToString(), "test")
    services = {s.service for s in pipeline.subjects.subjects if s.route == "/c"}
    assert services == {"unknown_service"}


def test_missing_service_name_through_grpc(client: Client) -> None:
    received = client.received("grpc")
    response = client.stub.Export(build_request({None: [SpanSpec(route="/anon")] * 2}), timeout=10)
    assert not response.HasField("partial_success")
    assert client.received("grpc") == received + 2
    # The worker thread adds the batch; the subject was interned at decode time.
    subjects = client.app.pipeline.subjects.subjects
    assert any(s.service == "unknown_service" and s.route == "/anon" for s in subjects)
