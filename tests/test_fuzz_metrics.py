"""Property-based fuzzing of both metrics decoders: protobuf and OTLP/JSON bodies through
the pipeline's metrics path (MetricsStage.decode, then .apply into real windows), and the
OTLP/JSON parser for metrics.

Whatever arrives, the only failure a decoder may report is the documented one
(InvalidRequest, ValueError), and what it accepts stays finite, non-negative and bounded.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_ai.counters import ERRORS, REQUESTS
from otel_ai.metrics.stage import MetricsStage
from otel_ai.proto.otel_ai.v1.metrics_view_pb2 import MetricsRequestView
from otel_ai.receiver.consumer import JSON, PROTOBUF, InvalidRequest, MetricsExportResult
from otel_ai.subjects import SubjectTable
from otel_ai.windows import WindowStore
from otel_ai.receiver.otlp_json import parse_otlp_json, to_otlp_json
from otel_ai.testing.metric_requests import CUMULATIVE, histogram_point, metric

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
T0 = 1_771_164_000 * 10**9
UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
MAX_STREAMS = 64


class MetricsPath:
    """The pipeline's metrics path without its clock: decode, then convert and rows into windows."""

    def __init__(self) -> None:
        self.stage = MetricsStage(SubjectTable(), max_streams=MAX_STREAMS)
        self.windows = WindowStore(10 * 10**9, 31, (REQUESTS, ERRORS))

    def consume_metrics(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> MetricsExportResult:
        decoded, work = self.stage.decode(body, encoding, None)
        self.stage.apply(work, self.windows)
        return MetricsExportResult(decoded.rejected, decoded.reject_message, decoded.data_points)


def new_ingest() -> MetricsPath:
    return MetricsPath()


def points_in(body: bytes) -> int:
    view = MetricsRequestView.FromString(body)
    total = 0
    for resource_metrics in view.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for found in scope_metrics.metrics:
                which = found.WhichOneof("data")
                total += len(getattr(found, which).data_points) if which else 0
    return total


def check_state(ingest: MetricsPath) -> None:
    values = ingest.windows.values
    for column in (values["requests"], values["errors"], values["squared_weights"], ingest.windows.hist):
        assert np.isfinite(column).all() and (column >= 0).all()
    assert (values["errors"] <= values["requests"] * (1 + 1e-6) + 1e-6).all()
    assert len(ingest.stage.converter) <= MAX_STREAMS


def _valid_body() -> bytes:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.server.request.duration")
    found.histogram.aggregation_temporality = CUMULATIVE
    histogram_point(found.histogram, {"http.route": "/x", "http.response.status_code": 500}, [1] * 15, T0, T0 + 10**9)
    return request.SerializeToString()


VALID = _valid_body()


@FUZZ
@given(body=st.one_of(st.binary(max_size=4096), st.binary(max_size=256).map(lambda b: VALID + b),
                      st.integers(0, len(VALID)).map(lambda n: VALID[:n])))
@example(body=b"")
@example(body=VALID)
@example(body=b"\x0a\xff\xff\xff\xff\x0f")
@example(body=b"\x0b" * 64)
def test_arbitrary_bytes_give_a_result_or_invalid_request(body: bytes) -> None:
    ingest = new_ingest()
    try:
        result = ingest.consume_metrics(body, "fuzz")
    except InvalidRequest as exc:
        assert str(exc)
        return
    assert isinstance(result, MetricsExportResult)
    assert 0 <= result.rejected_data_points <= result.data_points == points_in(body)
    check_state(ingest)


# ------------------------------------------------------------ structured requests

NAMES = ["http.server.request.duration", "http.server.duration", "rpc.server.duration", "http.client.request.duration",
         "system.cpu.utilization", "k8s.pod.cpu_limit_utilization", "k8s.container.cpu_limit", "k8s.pod.cpu.usage",
         "container.memory.percent", "unknown.metric"]
text = st.text(max_size=12)
any_values = st.one_of(
    st.sampled_from(["/a", "GET", "500", "payments", "idle", "user", "cpu0", ""]).map(lambda s: AnyValue(string_value=s)),
    text.map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), INT64_MAX).map(lambda i: AnyValue(int_value=i)),
    st.sampled_from([200, 404, 500, 503, 14, 5]).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.just(AnyValue()),
)
keys = st.one_of(st.sampled_from(["http.route", "http.request.method", "http.response.status_code", "error.type",
                                  "server.address", "peer.service", "rpc.service", "rpc.grpc.status_code", "state",
                                  "cpu", "service.name", "k8s.pod.name", "k8s.container.name", "otel_ai.generated"]),
                 text)
attributes = st.lists(st.tuples(keys, any_values), max_size=5).map(lambda kv: [KeyValue(key=k, value=v) for k, v in kv])
times = st.one_of(st.integers(T0, T0 + 10**12), st.sampled_from([0, 1, INT64_MAX, UINT64_MAX]),
                  st.integers(0, UINT64_MAX))
counts = st.one_of(st.integers(0, 1000), st.sampled_from([0, 2**53 + 1, UINT64_MAX]))
floats = st.one_of(st.floats(), st.floats(-1e3, 1e3), st.sampled_from([0.0, -0.0, 1e308, 5e-324]))


@st.composite
def histograms(draw: st.DrawFn, data) -> None:
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(0, 20))
        bucket_counts = draw(st.lists(counts, min_size=n, max_size=n))
        point = data.data_points.add(start_time_unix_nano=draw(times), time_unix_nano=draw(times),
                                     bucket_counts=bucket_counts,
                                     explicit_bounds=draw(st.one_of(
                                         st.just(sorted({0.001 * (i + 1) for i in range(max(0, n - 1))})),
                                         st.lists(floats, max_size=21))),
                                     flags=draw(st.integers(0, 3)))
        point.count = draw(st.one_of(st.just(sum(bucket_counts) % 2**64), counts))
        if draw(st.booleans()):
            point.min, point.max = draw(floats), draw(floats)
        point.attributes.extend(draw(attributes))
        _exemplars(draw, point)


@st.composite
def exponential(draw: st.DrawFn, data) -> None:
    for _ in range(draw(st.integers(0, 3))):
        positive = draw(st.lists(counts, max_size=12))
        negative = draw(st.lists(st.integers(0, 5), max_size=3))
        zero = draw(st.integers(0, 5))
        point = data.data_points.add(start_time_unix_nano=draw(times), time_unix_nano=draw(times),
                                     scale=draw(st.one_of(st.integers(-10, 20), st.integers(-(2**31), 2**31 - 1))),
                                     zero_count=zero, flags=draw(st.integers(0, 1)))
        point.count = draw(st.one_of(st.just((zero + sum(positive) + sum(negative)) % 2**64), counts))
        point.positive.offset = draw(st.one_of(st.integers(-100, 100), st.integers(-(2**31), 2**31 - 1)))
        point.positive.bucket_counts.extend(positive)
        point.negative.bucket_counts.extend(negative)
        if draw(st.booleans()):
            point.min, point.max = draw(floats), draw(floats)
        point.attributes.extend(draw(attributes))
        _exemplars(draw, point)


def _exemplars(draw: st.DrawFn, point) -> None:
    for _ in range(draw(st.integers(0, 2))):
        exemplar = point.exemplars.add(time_unix_nano=draw(times), trace_id=draw(st.binary(max_size=17)),
                                       span_id=draw(st.binary(max_size=9)))
        if draw(st.booleans()):
            exemplar.as_double = draw(floats)
        else:
            exemplar.as_int = draw(st.integers(-(2**63), INT64_MAX))


@st.composite
def requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.attributes.extend(draw(attributes))
        scope_metrics = resource_metrics.scope_metrics.add()
        for _ in range(draw(st.integers(0, 3))):
            found = scope_metrics.metrics.add(name=draw(st.sampled_from(NAMES)),
                                              unit=draw(st.sampled_from(["s", "ms", "", "%", "1", "By", "weird"])))
            kind = draw(st.sampled_from(["histogram", "exponential_histogram", "gauge", "sum"]))
            data = getattr(found, kind)
            if kind in ("histogram", "exponential_histogram", "sum"):
                data.aggregation_temporality = draw(st.integers(0, 3))
            if kind == "histogram":
                draw(histograms(data))
            elif kind == "exponential_histogram":
                draw(exponential(data))
            else:
                for _ in range(draw(st.integers(0, 4))):
                    point = data.data_points.add(time_unix_nano=draw(times), flags=draw(st.integers(0, 1)))
                    if draw(st.booleans()):
                        point.as_double = draw(floats)
                    else:
                        point.as_int = draw(st.integers(-(2**63), INT64_MAX))
                    point.attributes.extend(draw(attributes))
    return request


@settings(FUZZ, max_examples=100)  # three requests per example
@given(first=requests(), second=requests())
def test_structured_requests_never_crash_and_stay_bounded(first: ExportMetricsServiceRequest,
                                                          second: ExportMetricsServiceRequest) -> None:
    ingest = new_ingest()
    # The repeat replays the same cumulative points; the second request comes as OTLP/JSON.
    for request, encoding in ((first, PROTOBUF), (second, JSON), (first, PROTOBUF)):
        body = request.SerializeToString()
        sent = body if encoding == PROTOBUF else to_otlp_json(request).encode()
        result = ingest.consume_metrics(sent, "fuzz", encoding)  # built by protobuf: always decodable
        assert 0 <= result.rejected_data_points <= result.data_points == points_in(body)
        assert bool(result.rejected_data_points) == bool(result.error_message)
        check_state(ingest)
    for forecast in ingest.stage.saturation.forecasts():
        assert math.isfinite(forecast.ratio)


# ------------------------------------------------------------ OTLP/JSON

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=16))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=20)
hexish = st.one_of(st.text(alphabet="0123456789abcdef", max_size=40), st.text(max_size=8), json_values)
exemplar_dicts = st.dictionaries(st.sampled_from(["traceId", "spanId", "trace_id", "asDouble", "timeUnixNano"]),
                                 hexish, max_size=4)
point_dicts = st.fixed_dictionaries({}, optional={
    "exemplars": st.lists(exemplar_dicts, max_size=2), "count": json_values, "bucketCounts": json_values,
    "explicitBounds": json_values, "attributes": json_values, "timeUnixNano": json_values})
metric_dicts = st.builds(lambda kind, points, name: {"name": name, kind: {"dataPoints": points}},
                         st.sampled_from(["histogram", "exponentialHistogram", "gauge", "sum", "summary"]),
                         st.lists(point_dicts, max_size=2), st.one_of(st.sampled_from(NAMES), json_values))
metrics_shaped = st.builds(lambda metrics, key: {key: [{"scopeMetrics": [{"metrics": metrics}]}]},
                           st.lists(metric_dicts, max_size=3), st.sampled_from(["resourceMetrics", "resource_metrics"]))
json_bodies = st.one_of(st.one_of(json_values, metrics_shaped).map(lambda d: json.dumps(d).encode()),
                        st.binary(max_size=200))


@FUZZ
@given(body=json_bodies)
@example(body=b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"histogram": {"dataPoints": '
              b'[{"exemplars": [{"traceId": 5}]}]}}]}]}]}')
@example(body=b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": '
              b'[{"exemplars": [{"spanId": "abc"}]}]}}]}]}]}')
def test_metrics_json_parser_raises_only_value_error(body: bytes) -> None:
    try:
        request = parse_otlp_json(body, ExportMetricsServiceRequest)
    except ValueError as exc:
        assert str(exc)
        with pytest.raises(InvalidRequest):  # the pipeline's JSON path refuses it the same way
            new_ingest().consume_metrics(body, "fuzz", JSON)
        return
    assert ExportMetricsServiceRequest.FromString(request.SerializeToString()) == request
    ingest = new_ingest()
    result = ingest.consume_metrics(body, "fuzz", JSON)
    assert 0 <= result.rejected_data_points <= result.data_points
    check_state(ingest)


@FUZZ
@given(trace_id=st.binary(min_size=16, max_size=16), span_id=st.binary(min_size=8, max_size=8),
       value=st.floats(allow_nan=False), time_ns=st.integers(0, UINT64_MAX))
def test_metrics_json_round_trip_with_hex_exemplar_ids(trace_id: bytes, span_id: bytes, value: float,
                                                       time_ns: int) -> None:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.server.request.duration")
    found.histogram.aggregation_temporality = CUMULATIVE
    point = histogram_point(found.histogram, {"http.route": "/x"}, [1, 2], T0, T0 + 1, bounds=[0.1])
    point.exemplars.add(time_unix_nano=time_ns, trace_id=trace_id, span_id=span_id, as_double=value)
    document = to_otlp_json(request)
    exemplar = json.loads(document)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"][
        "dataPoints"][0]["exemplars"][0]
    assert exemplar["traceId"] == trace_id.hex() and exemplar["spanId"] == span_id.hex()
    assert parse_otlp_json(document.encode(), ExportMetricsServiceRequest) == request
