"""Real OTel SDK apps (MeterProvider + the OTLP/gRPC metric exporter) sending to the gRPC
receiver's MetricsService, into MetricsIngest.

Each app exports on demand (force_flush) instead of on a timer: every flush is one
export interval, so the tests run in milliseconds and never sleep. Slots are 1 us wide
so that each export lands in its own slot.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_ai.histogram import percentile
from otel_ai.metrics.ingest import MetricsIngest, RedTotals
from otel_ai.metrics.saturation import SaturationStore
from otel_ai.model import ROUTE, Subject
from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.testing.consumers import RecordingConsumer

BOUNDS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
CHECKOUT = {"service.name": "checkout", "k8s.pod.name": "checkout-1"}
PAY = {"http.route": "/api/payments", "http.request.method": "POST"}


class Running:
    def __init__(self, ingest: MetricsIngest, port: int, metrics: SelfMetrics) -> None:
        self.ingest = ingest
        self.port = port
        self.metrics = metrics

    def totals_of(self, subject: Subject) -> tuple[float, float, float]:
        sid = self.ingest.subjects.lookup(subject)
        assert sid is not None, f"{subject} never arrived"
        totals = self.ingest.totals
        return float(totals.requests[sid]), float(totals.errors[sid]), float(totals.client_errors[sid])


@pytest.fixture
def running() -> Iterator[Running]:
    metrics = SelfMetrics()
    ingest = MetricsIngest(metrics=metrics, totals=RedTotals(slot_ns=1000),
                           saturation=SaturationStore(horizon_s=10**9))
    receiver = OtlpGrpcReceiver(RecordingConsumer(), metrics, port=0, metrics_consumer=ingest)
    port = receiver.start()
    yield Running(ingest, port, metrics)
    receiver.stop(grace_s=0)


@contextmanager
def app(port: int, resource: dict = CHECKOUT, **exporter_options) -> Iterator[MeterProvider]:
    """An instrumented process: its own MeterProvider and OTLP metric exporter."""
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5, **exporter_options)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create(resource), metric_readers=[reader])
    try:
        yield provider
    finally:
        provider.shutdown()


def server_histogram(provider: MeterProvider, name: str = "http.server.request.duration", unit: str = "s",
                     bounds=BOUNDS_S):
    return provider.get_meter("app").create_histogram(name, unit=unit, explicit_bucket_boundaries_advisory=bounds)


def serve(histogram, rng: np.random.Generator, requests: int, error_share: float = 0.0, client_share: float = 0.0,
          median_s: float = 0.02, route: dict = PAY) -> tuple[int, int]:
    """Record `requests` requests; returns (server errors, 4xx) recorded."""
    outcome = rng.choice(3, size=requests, p=[1 - error_share - client_share, error_share, client_share])
    durations = rng.lognormal(np.log(median_s), 0.3, requests)
    for status_index, duration in zip(outcome, durations):
        status = (200, 503, 404)[status_index]
        histogram.record(float(duration), {**route, "http.response.status_code": status})
    return int((outcome == 1).sum()), int((outcome == 2).sum())


def test_cumulative_export_gives_exact_red_totals(running: Running) -> None:
    rng = np.random.default_rng(1)
    truth = [0, 0, 0]
    with app(running.port) as provider:
        histogram = server_histogram(provider)
        for error_share in (0.0, 0.3, 0.0):  # errors injected in the second interval only
            errors, client = serve(histogram, rng, 200, error_share, client_share=0.05)
            truth = [truth[0] + 200, truth[1] + errors, truth[2] + client]
            provider.force_flush()
    subject = Subject(ROUTE, "checkout", "POST", "/api/payments")
    assert running.totals_of(subject) == tuple(map(float, truth))
    sid = running.ingest.subjects.lookup(subject)
    series = running.ingest.totals.slot_series(sid)
    error_slots = [errors for _, _, errors, _ in series if errors > 0]
    assert len(error_slots) == 1 and error_slots[0] == truth[1]  # the burst stays in its own interval
    hist = running.ingest.totals.hist[sid]
    assert hist.sum() == pytest.approx(600)
    assert 10 < percentile(hist, 0.5) < 30  # recorded around 20 ms
    received = running.metrics.registry.get_sample_value("otel_ai_data_points_received_total", {"transport": "grpc"})
    assert received and received >= 3


def test_a_process_restart_raises_nothing(running: Running) -> None:
    rng = np.random.default_rng(2)
    per_interval = 150
    for _ in range(2):  # the same process identity, restarted: its counters start again from zero
        with app(running.port) as provider:
            histogram = server_histogram(provider)
            for _ in range(3):
                serve(histogram, rng, per_interval)
                provider.force_flush()
    subject = Subject(ROUTE, "checkout", "POST", "/api/payments")
    requests, errors, _ = running.totals_of(subject)
    series = running.ingest.totals.slot_series(running.ingest.subjects.lookup(subject))
    busiest = max(r for _, r, _, _ in series)
    print(f"\nrestart: {requests:.0f} requests counted of {6 * per_interval} sent; busiest slot {busiest:.0f} "
          f"(one interval is {per_interval})")
    assert (requests, errors) == (6 * per_interval, 0)
    assert busiest <= per_interval


def test_delta_temporality_and_exponential_buckets(running: Running) -> None:
    rng = np.random.default_rng(3)
    with app(running.port, preferred_temporality={Histogram: AggregationTemporality.DELTA},
             preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()}) as provider:
        histogram = server_histogram(provider)
        errors = 0
        for _ in range(3):
            errors += serve(histogram, rng, 100, error_share=0.1)[0]
            provider.force_flush()
    subject = Subject(ROUTE, "checkout", "POST", "/api/payments")
    assert running.totals_of(subject) == (300.0, float(errors), 0.0)
    assert len(running.ingest.converter) == 0  # delta streams keep no state
    hist = running.ingest.totals.hist[running.ingest.subjects.lookup(subject)]
    assert 15 < percentile(hist, 0.5) < 27


def test_old_millisecond_metric(running: Running) -> None:
    rng = np.random.default_rng(4)
    route = {"http.route": "/api/cart", "http.method": "GET"}
    with app(running.port) as provider:
        histogram = server_histogram(provider, "http.server.duration", "ms",
                                     [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000])
        for _ in range(50):
            histogram.record(float(rng.lognormal(np.log(40), 0.2)), {**route, "http.status_code": 200})
        provider.force_flush()
    subject = Subject(ROUTE, "checkout", "GET", "/api/cart")
    assert running.totals_of(subject) == (50.0, 0.0, 0.0)
    assert 25 < percentile(running.ingest.totals.hist[running.ingest.subjects.lookup(subject)], 0.5) < 60


def test_exemplars_carry_the_trace_of_a_failing_request(running: Running) -> None:
    tracer = TracerProvider().get_tracer("app")
    with app(running.port) as provider:
        histogram = server_histogram(provider)
        with tracer.start_as_current_span("POST /api/payments") as span:
            histogram.record(0.3, {**PAY, "http.response.status_code": 503})
        provider.force_flush()
    sid = running.ingest.subjects.lookup(Subject(ROUTE, "checkout", "POST", "/api/payments"))
    exemplars = list(running.ingest.totals.exemplars[sid])
    expected = span.get_span_context().trace_id.to_bytes(16, "big")
    assert [e.trace_id for e in exemplars] == [expected]
    assert exemplars[0].value_ms == pytest.approx(300)


def test_cpu_climbing_toward_a_pod_limit_has_a_time_to_saturation_and_steady_70_percent_none(
        running: Running) -> None:
    # Usage is a function of the time the SDK collects it, so the trend is linear in the
    # points' own timestamps however unevenly a busy machine spaces the exports.
    started = time.monotonic()
    rng = np.random.default_rng(5)

    def climbing_cpu(options: CallbackOptions):
        yield Observation(0.5 + 0.2 * (time.monotonic() - started))  # +20 %/s

    def steady_cpu(options: CallbackOptions):
        yield Observation(float(0.7 + rng.normal(0, 0.01)))

    with app(running.port, {"service.name": "checkout", "k8s.pod.name": "checkout-hot"}) as hot, \
            app(running.port, {"service.name": "checkout", "k8s.pod.name": "checkout-calm"}) as calm:
        hot.get_meter("kubeletstats").create_observable_gauge("k8s.pod.cpu_limit_utilization", [climbing_cpu])
        calm.get_meter("kubeletstats").create_observable_gauge("k8s.pod.cpu_limit_utilization", [steady_cpu])
        for _ in range(12):
            hot.force_flush()
            calm.force_flush()
    forecasts = {f.series.instance: f for f in running.ingest.saturation.forecasts()}
    hot_forecast = forecasts["checkout-hot"]
    assert hot_forecast.ratio > 0.5
    assert hot_forecast.seconds_to_saturation is not None
    assert forecasts["checkout-calm"].seconds_to_saturation is None
