"""Metrics decode: RED points keyed like spans, errors by the span rules, latency bins,
exemplars, resource utilization samples, and clear rejections."""
from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.decode import Decoder, TimeBounds
from otel_ai.histogram import bin_index, percentile
from otel_ai.metrics import semconv
from otel_ai.metrics.decode import MetricsDecoder
from otel_ai.metrics.points import MetricBatch
from otel_ai.model import DEPENDENCY, ROUTE, Subject
from otel_ai.proto.otel_ai.v1.metrics_view_pb2 import MetricsRequestView
from otel_ai.subjects import SubjectTable
from otel_ai.testing.metric_requests import (
    CUMULATIVE,
    DELTA,
    exponential_point,
    gauge_point,
    histogram_point,
    metric,
    set_attributes,
)

T0 = 1_771_164_000 * 10**9
END = T0 + 10 * 10**9
POD = {"service.name": "checkout", "k8s.pod.name": "checkout-7d9f"}
PAY = {"http.route": "/api/payments", "http.request.method": "POST"}
COUNTS = [0, 3, 10, 20, 5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # 40 requests, mostly 10..75 ms


def decode(request: ExportMetricsServiceRequest, subjects: SubjectTable | None = None,
           bounds: TimeBounds | None = None) -> tuple[MetricBatch, SubjectTable]:
    subjects = subjects if subjects is not None else SubjectTable()
    view = MetricsRequestView.FromString(request.SerializeToString())
    return MetricsDecoder(subjects).decode(view, bounds), subjects


def server_histogram(attributes: dict, counts=COUNTS, name: str = "http.server.request.duration", unit: str = "s",
                     temporality: int = CUMULATIVE, resource: dict = POD, bounds=None) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    found = metric(request, name, unit, resource)
    found.histogram.aggregation_temporality = temporality
    kwargs = {"bounds": bounds} if bounds is not None else {}
    histogram_point(found.histogram, attributes, counts, T0, END, **kwargs)
    return request


def subject_of(batch: MetricBatch, subjects: SubjectTable, row: int = 0) -> Subject:
    return subjects.subjects[int(batch.red.subject_id[row])]


def test_route_is_the_same_subject_as_the_server_span_of_that_route() -> None:
    subjects = SubjectTable()
    spans = ExportTraceServiceRequest()
    resource_spans = spans.resource_spans.add()
    set_attributes(resource_spans.resource.attributes, POD)
    span = resource_spans.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, kind=2,
                                                      name="POST /api/payments", start_time_unix_nano=T0,
                                                      end_time_unix_nano=T0 + 10**6)
    set_attributes(span.attributes, {**PAY, "http.response.status_code": 200})
    span_batch = Decoder(subjects).decode(spans.SerializeToString(), None)

    batch, _ = decode(server_histogram({**PAY, "http.response.status_code": 200}), subjects)
    assert batch.red.subject_id.tolist() == span_batch.subject_id.tolist()
    assert subject_of(batch, subjects) == Subject(ROUTE, "checkout", "POST", "/api/payments")
    assert batch.red.count.tolist() == [40.0]
    assert batch.red.kind.tolist() == [semconv.SERVER]
    assert batch.red.resources[batch.red.resource[0]].instance == "checkout-7d9f"


def test_latency_lands_in_the_bins_the_buckets_describe() -> None:
    batch, _ = decode(server_histogram(PAY))
    hist = batch.red.hist[0]
    assert hist.sum() == pytest.approx(40)
    # 35 of 40 requests fall in (10, 50] ms (counts 10 + 20 + 5 in buckets 2-4 are 10..75 ms).
    inside = hist[bin_index(np.array([10.0]))[0]:bin_index(np.array([75.0]))[0] + 1].sum()
    assert inside >= 34
    assert 10 < percentile(hist, 0.5) < 50


def test_old_millisecond_metric_gives_the_same_bins_as_the_new_one() -> None:
    new, _ = decode(server_histogram(PAY))
    bounds_ms = [b * 1000 for b in (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)]
    old, subjects = decode(server_histogram({"http.route": "/api/payments", "http.method": "POST"},
                                            name="http.server.duration", unit="ms", bounds=bounds_ms))
    np.testing.assert_allclose(old.red.hist, new.red.hist)
    assert subject_of(old, subjects).method == "POST"


def test_unit_field_wins_over_the_metric_default() -> None:
    as_seconds, _ = decode(server_histogram(PAY, name="http.server.duration", unit="s"))
    as_default, _ = decode(server_histogram(PAY))
    np.testing.assert_allclose(as_seconds.red.hist, as_default.red.hist)


@pytest.mark.parametrize("attributes, error, client_error", [
    ({"http.response.status_code": 200}, False, False),
    ({"http.response.status_code": 503}, True, False),
    ({"http.status_code": 500}, True, False),
    ({"http.response.status_code": 404}, False, True),
    ({"http.response.status_code": 404, "error.type": "404"}, False, True),  # 4xx are never server errors
    ({"error.type": "java.net.SocketTimeoutException"}, True, False),
    ({"http.response.status_code": "502"}, True, False),
])
def test_errors_follow_the_span_rules(attributes: dict, error: bool, client_error: bool) -> None:
    batch, _ = decode(server_histogram({**PAY, **attributes}))
    assert (bool(batch.red.error[0]), bool(batch.red.client_error[0])) == (error, client_error)


@pytest.mark.parametrize("code, error, client_error", [(0, False, False), (14, True, False), (5, False, True)])
def test_rpc_server_metric_is_the_rpc_route_of_spans(code: int, error: bool, client_error: bool) -> None:
    batch, subjects = decode(server_histogram(
        {"rpc.system": "grpc", "rpc.service": "payments.v1.PaymentService", "rpc.method": "Charge",
         "rpc.grpc.status_code": code}, name="rpc.server.duration", unit="ms"))
    assert subject_of(batch, subjects) == Subject(ROUTE, "checkout", "GRPC", "payments.v1.PaymentService/Charge")
    assert (bool(batch.red.error[0]), bool(batch.red.client_error[0])) == (error, client_error)


def test_route_without_http_route_is_named_like_its_span() -> None:
    batch, subjects = decode(server_histogram({"http.request.method": "GET"}))
    assert subject_of(batch, subjects) == Subject(ROUTE, "checkout", "GET", "GET")


@pytest.mark.parametrize("attributes, dependency", [
    ({"server.address": "payments.internal", "server.port": 443}, "payments.internal"),
    ({"peer.service": "payments", "server.address": "10.0.0.7"}, "payments"),
    ({"net.peer.name": "legacy-host"}, "legacy-host"),
])
def test_client_metric_is_a_dependency_keyed_like_client_spans(attributes: dict, dependency: str) -> None:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.client.request.duration", "s", POD)
    found.histogram.aggregation_temporality = DELTA
    histogram_point(found.histogram, {"http.request.method": "POST", **attributes}, COUNTS, T0, END)
    batch, subjects = decode(request)
    assert subject_of(batch, subjects) == Subject(DEPENDENCY, dependency, "", dependency)
    assert batch.red.kind.tolist() == [semconv.CLIENT]
    assert not batch.red.cumulative[0]


def test_client_metric_without_a_dependency_name_is_ignored() -> None:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.client.request.duration", "s", POD)
    found.histogram.aggregation_temporality = DELTA
    histogram_point(found.histogram, {"http.request.method": "GET"}, COUNTS, T0, END)
    batch, _ = decode(request)
    assert (len(batch.red), batch.ignored, batch.rejected) == (0, 1, 0)


def test_a_single_bucket_says_nothing_about_latency_without_the_interval_s_min_and_max() -> None:
    batch, _ = decode(server_histogram(PAY, counts=[12], bounds=[]))
    assert batch.red.count.tolist() == [12.0] and batch.red.hist.sum() == 0
    for temporality, known in ((DELTA, True), (CUMULATIVE, False)):  # a cumulative min/max spans its whole life
        request = server_histogram(PAY, counts=[12], bounds=[], temporality=temporality)
        point = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
        point.min, point.max = 0.01, 0.04
        hist = decode(request)[0].red.hist[0]
        if known:
            assert hist.sum() == pytest.approx(12) and 10 <= percentile(hist, 0.5) <= 40
        else:
            assert hist.sum() == 0


def test_exponential_histogram() -> None:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.server.request.duration", "s", POD)
    found.exponential_histogram.aggregation_temporality = CUMULATIVE
    # scale 0: bucket i is (2^i, 2^(i+1)] s; offset -7 -> (7.8, 15.6] ms, then (15.6, 31.2] ms.
    exponential_point(found.exponential_histogram, PAY, [30, 10], T0, END, scale=0, offset=-7, zero_count=2)
    batch, _ = decode(request)
    hist = batch.red.hist[0]
    assert batch.red.count.tolist() == [42.0] and hist.sum() == pytest.approx(42)
    assert hist[0] == pytest.approx(2)  # the zero bucket
    assert 7.8 < percentile(hist, 0.5) < 15.7


def test_exemplars_are_kept_with_their_trace_ids() -> None:
    request = server_histogram({**PAY, "http.response.status_code": 500})
    point = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    point.exemplars.add(time_unix_nano=END - 5, trace_id=bytes(range(16)), span_id=b"\x09" * 8, as_double=0.042)
    point.exemplars.add(time_unix_nano=END - 4, trace_id=b"\x00" * 16, span_id=b"\x09" * 8, as_double=0.1)  # invalid
    point.exemplars.add(time_unix_nano=END - 3, trace_id=b"\x01" * 4, span_id=b"\x09" * 8, as_double=0.1)  # invalid
    for i in range(6):
        point.exemplars.add(time_unix_nano=END, trace_id=bytes([i + 1]) * 16, span_id=b"\x01" * 8, as_int=1)
    batch, _ = decode(request)
    exemplars = batch.red.exemplars
    assert len(exemplars) == 4  # capped per point
    assert exemplars[0].trace_id == bytes(range(16)) and exemplars[0].value_ms == pytest.approx(42.0)
    assert exemplars[0].row == 0 and batch.red.error[exemplars[0].row]


def test_stream_identity() -> None:
    a, _ = decode(server_histogram({**PAY, "http.response.status_code": 200}))
    again, _ = decode(server_histogram({**PAY, "http.response.status_code": 200}))
    other_status, _ = decode(server_histogram({**PAY, "http.response.status_code": 500}))
    other_pod, _ = decode(server_histogram({**PAY, "http.response.status_code": 200},
                                           resource={**POD, "k8s.pod.name": "checkout-2"}))
    assert a.red.stream[0] == again.red.stream[0]
    assert len({int(a.red.stream[0]), int(other_status.red.stream[0]), int(other_pod.red.stream[0])}) == 3
    restarted = server_histogram({**PAY, "http.response.status_code": 200})
    restarted.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0].start_time_unix_nano = T0 + 1
    assert decode(restarted)[0].red.stream[0] != a.red.stream[0]  # a new start is a new cumulative stream
    delta = server_histogram(PAY, temporality=DELTA)
    later = server_histogram(PAY, temporality=DELTA)
    later.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0].start_time_unix_nano = T0 + 1
    assert decode(delta)[0].red.stream[0] == decode(later)[0].red.stream[0]  # delta streams: start is not identity


def test_bad_points_are_refused_one_by_one_with_reasons() -> None:
    request = ExportMetricsServiceRequest()
    found = metric(request, "http.server.request.duration", "s", POD)
    found.histogram.aggregation_temporality = CUMULATIVE
    data = found.histogram
    histogram_point(data, PAY, COUNTS, T0, END)  # fine
    histogram_point(data, PAY, COUNTS, T0, END).count = 41  # count differs from its buckets
    histogram_point(data, PAY, COUNTS[:-1], T0, END)  # buckets do not match the bounds
    histogram_point(data, PAY, [1, 2, 3], T0, END, bounds=[0.5, 0.1])  # bounds not increasing
    histogram_point(data, PAY, [1, 2, 3], T0, END, bounds=[0.1, float("nan")])
    histogram_point(data, PAY, COUNTS, END, T0)  # start after end
    histogram_point(data, PAY, COUNTS, 0, 0)  # no time
    histogram_point(data, PAY, COUNTS, T0, END).flags = 1  # no recorded value: ignored, not refused
    unspecified = metric(request, "http.server.request.duration", "s", POD)
    histogram_point(unspecified.histogram, PAY, COUNTS, T0, END)  # aggregation temporality unspecified
    batch, _ = decode(request)
    assert (batch.data_points, len(batch.red), batch.rejected, batch.ignored) == (9, 1, 7, 1)
    for words in ("count differs", "do not match the bounds", "not finite and increasing", "start after the end",
                  "no aggregation temporality"):
        assert words in batch.reject_message


def test_points_far_from_now_are_refused() -> None:
    batch, _ = decode(server_histogram(PAY), bounds=TimeBounds(END + 1, END + 100))
    assert batch.rejected == 1 and "too far from now" in batch.reject_message


def test_otel_ai_own_metrics_and_unknown_metrics_are_ignored() -> None:
    request = server_histogram(PAY, resource={"service.name": "otel-ai", "otel_ai.generated": True})
    other = metric(request, "db.client.operation.duration", "s", POD)
    other.histogram.aggregation_temporality = CUMULATIVE
    histogram_point(other.histogram, {}, COUNTS, T0, END)
    batch, _ = decode(request)
    assert (batch.data_points, batch.ignored, len(batch.red)) == (2, 2, 0)


def utilization_request(name: str, points: list[tuple[float, dict]], unit: str = "1", resource: dict = POD,
                        kind: str = "gauge") -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    found = metric(request, name, unit, resource)
    for value, attributes in points:
        gauge_point(getattr(found, kind), value, END, attributes)
    return request


def test_host_cpu_is_the_busy_share_averaged_over_cpus() -> None:
    points = [(v, {"cpu": cpu, "state": state}) for cpu, busy in (("cpu0", 0.9), ("cpu1", 0.5))
              for state, v in (("user", busy * 0.75), ("system", busy * 0.25), ("idle", 1 - busy), ("wait", 0.0))]
    batch, _ = decode(utilization_request("system.cpu.utilization", points))
    [sample] = batch.utilization
    assert sample.value == pytest.approx(0.7)
    assert sample.measure == semconv.RATIO and sample.series.resource == semconv.CPU
    assert sample.series.instance == "checkout-7d9f"


def test_memory_utilization_counts_only_the_used_state() -> None:
    points = [(0.6, {"state": "used"}), (0.3, {"state": "free"}), (0.1, {"state": "cached"})]
    [sample] = decode(utilization_request("system.memory.utilization", points))[0].utilization
    assert sample.value == pytest.approx(0.6) and sample.series.resource == semconv.MEMORY


def test_container_sources_are_per_container_and_scaled() -> None:
    resource = {**POD, "k8s.container.name": "app"}
    [limit] = decode(utilization_request("k8s.container.cpu_limit", [(2.0, {})], "{cpu}", resource))[0].utilization
    [percent] = decode(utilization_request("container.memory.percent", [(85.0, {})], "%", resource))[0].utilization
    assert (limit.measure, limit.value, limit.series.container) == (semconv.LIMIT, 2.0, "app")
    assert (percent.measure, percent.value) == (semconv.RATIO, pytest.approx(0.85))


def test_limit_from_a_non_monotonic_sum() -> None:
    [limit] = decode(utilization_request("container.memory.usage.limit", [(2.0**30, {})], "By",
                                         {**POD, "container.name": "app"}, kind="sum"))[0].utilization
    assert limit.measure == semconv.LIMIT and limit.value == 2.0**30


def test_negative_or_nan_utilization_is_refused() -> None:
    batch, _ = decode(utilization_request("k8s.pod.cpu_limit_utilization", [(-0.5, {}), (float("nan"), {}),
                                                                            (0.5, {})]))
    assert batch.rejected == 2 and len(batch.utilization) == 1
