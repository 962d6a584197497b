"""Real OTel SDK apps (MeterProvider + the OTLP/gRPC metric exporter) sending to the gRPC
receiver's MetricsService, into the pipeline's windows: what each export adds to its
route's 10 s slots. And what a refused export leaves behind (nothing).

Each app exports on demand (force_flush) with its SDK clock moved 10 s per export
(otel_ai.testing.sdk_clock), so every flush is one export interval and the tests never
sleep. The pipeline runs on event time only (no wall clock).
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_ai.config import load_settings
from otel_ai.histogram import percentile
from otel_ai.model import ROUTE, Subject
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.consumer import Saturated
from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.store import IncidentStore
from otel_ai.testing.metric_requests import CUMULATIVE, histogram_point, metric
from otel_ai.testing.sdk_apps import SERVER_BOUNDS_S
from otel_ai.testing.sdk_clock import SdkClock, sdk_clock

NS = 10**9
T0 = 1_771_164_000 * NS  # on a slot boundary
CHECKOUT = {"service.name": "checkout", "k8s.pod.name": "checkout-1"}
PAY = {"http.route": "/api/payments", "http.request.method": "POST"}
PAYMENTS = Subject(ROUTE, "checkout", "POST", "/api/payments")


class Running:
    def __init__(self, pipeline: Pipeline, port: int, clock: SdkClock) -> None:
        self.pipeline = pipeline
        self.port = port
        self.clock = clock

    def slots(self, subject: Subject, counter: str = "requests") -> list[float]:
        """The subject's counter per slot from T0 on, as far as the pipeline saw."""
        assert self.pipeline.wait_idle(10)
        sid = self.pipeline.subjects.lookup(subject)
        assert sid is not None, f"{subject} never arrived"
        windows = self.pipeline.windows
        last = (self.pipeline.clock.max_end_ns - 1) // windows.slot_ns
        return [float(windows.values[counter][sid, slot % windows.ring]) for slot in range(T0 // windows.slot_ns, last + 1)]

    def hist(self, subject: Subject) -> np.ndarray:
        assert self.pipeline.wait_idle(10)
        return self.pipeline.windows.hist[self.pipeline.subjects.lookup(subject)].sum(axis=0, dtype=np.float64)


@pytest.fixture
def running() -> Iterator[Running]:
    with tempfile.TemporaryDirectory() as tmp, sdk_clock(T0) as clock:
        store = IncidentStore(Path(tmp) / "incidents.db")
        pipeline = Pipeline(load_settings(env={}), store, use_wall_clock=False)
        pipeline.start(T0)
        receiver = OtlpGrpcReceiver(pipeline, pipeline.metrics, port=0, metrics_consumer=pipeline)
        port = receiver.start()
        try:
            yield Running(pipeline, port, clock)
        finally:
            receiver.stop(grace_s=0)
            pipeline.stop()
            store.close()


def provider_of(port: int, **exporter_options) -> MeterProvider:
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5, **exporter_options)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(resource=Resource.create(CHECKOUT), metric_readers=[reader], shutdown_on_exit=False)


def serve(histogram, clock: SdkClock, rng: np.random.Generator, requests: int, error_share: float = 0.0,
          median_s: float = 0.02) -> int:
    """Record `requests` spread over the next 10 s of the SDK clock; returns the server errors."""
    start = clock.now_ns
    failed = rng.random(requests) < error_share
    for k, (fail, duration) in enumerate(zip(failed, rng.lognormal(np.log(median_s), 0.3, requests))):
        clock.now_ns = start + (k + 1) * 10 * NS // (requests + 1)
        histogram.record(float(duration), {**PAY, "http.response.status_code": 503 if fail else 200})
    clock.now_ns = start + 10 * NS
    return int(failed.sum())


def test_cumulative_exports_land_in_their_own_slots(running: Running) -> None:
    rng = np.random.default_rng(1)
    provider = provider_of(running.port)
    histogram = provider.get_meter("app").create_histogram("http.server.request.duration", unit="s",
                                                          explicit_bucket_boundaries_advisory=SERVER_BOUNDS_S)
    errors = []
    for error_share in (0.0, 0.0, 0.3, 0.0):  # errors in the third interval only
        errors.append(serve(histogram, running.clock, rng, 200, error_share))
        assert provider.force_flush()
    provider.shutdown()
    assert running.slots(PAYMENTS)[:4] == [200.0] * 4
    assert running.slots(PAYMENTS, "errors")[:4] == [float(e) for e in errors]  # the burst stays in its slot
    assert errors[2] > 30
    assert 12 < percentile(running.hist(PAYMENTS), 0.5) < 35  # recorded around 20 ms


def test_delta_temporality_and_exponential_buckets(running: Running) -> None:
    rng = np.random.default_rng(3)
    provider = provider_of(running.port, preferred_temporality={Histogram: AggregationTemporality.DELTA},
                           preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()})
    histogram = provider.get_meter("app").create_histogram("http.server.request.duration", unit="s")
    errors = []
    for _ in range(3):
        errors.append(serve(histogram, running.clock, rng, 100, error_share=0.1))
        assert provider.force_flush()
    provider.shutdown()
    assert running.slots(PAYMENTS)[:3] == [100.0] * 3
    assert sum(running.slots(PAYMENTS, "errors")) == pytest.approx(sum(errors))
    assert len(running.pipeline.metrics_stage.converter) == 0  # delta streams keep no state
    assert 15 < percentile(running.hist(PAYMENTS), 0.5) < 27


def test_old_millisecond_metric(running: Running) -> None:
    rng = np.random.default_rng(4)
    provider = provider_of(running.port)
    histogram = provider.get_meter("app").create_histogram(
        "http.server.duration", unit="ms",
        explicit_bucket_boundaries_advisory=[0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000])
    running.clock.advance(1)
    for _ in range(50):
        histogram.record(float(rng.lognormal(np.log(40), 0.2)), {"http.route": "/api/cart", "http.method": "GET",
                                                                "http.status_code": 200})
    running.clock.advance(9)
    assert provider.force_flush()
    provider.shutdown()
    cart = Subject(ROUTE, "checkout", "GET", "/api/cart")
    assert sum(running.slots(cart)) == 50.0
    assert 25 < percentile(running.hist(cart), 0.5) < 60


def test_exemplars_carry_the_trace_of_a_failing_request(running: Running) -> None:
    tracer = TracerProvider().get_tracer("app")
    provider = provider_of(running.port)
    histogram = provider.get_meter("app").create_histogram("http.server.request.duration", unit="s",
                                                          explicit_bucket_boundaries_advisory=SERVER_BOUNDS_S)
    running.clock.advance(2)
    with tracer.start_as_current_span("POST /api/payments") as span:
        histogram.record(0.3, {**PAY, "http.response.status_code": 503})
    running.clock.advance(8)
    assert provider.force_flush()
    provider.shutdown()
    assert running.pipeline.wait_idle(10)
    sid = running.pipeline.subjects.lookup(PAYMENTS)
    kept = running.pipeline.metrics_stage.exemplars.of_subject(sid)
    expected = format(span.get_span_context().trace_id, "032x")
    assert [e.trace_id for e in kept] == [expected]
    assert kept[0].value_ms == pytest.approx(300) and kept[0].error


def test_an_export_refused_for_a_full_queue_loses_nothing_when_retried(tmp_path: Path) -> None:
    """A cumulative point refused with Saturated must not move its stream on: the
    Collector retries it, and the next export's delta is taken from the last accepted one."""
    settings = load_settings(env={})
    settings.receiver.queue_batches = 1
    store = IncidentStore(tmp_path / "incidents.db")
    pipeline = Pipeline(settings, store, use_wall_clock=False)

    def export(total: int, seconds: int) -> bytes:
        request = ExportMetricsServiceRequest()
        found = metric(request, "http.server.request.duration", resource=CHECKOUT)
        found.histogram.aggregation_temporality = CUMULATIVE
        histogram_point(found.histogram, {**PAY, "http.response.status_code": 200}, [0, 0, total] + [0] * 12,
                        T0, T0 + seconds * NS)
        return request.SerializeToString()

    try:
        pipeline.consume_metrics(export(100, 10), "test")  # the worker is not running: the queue is full now
        with pytest.raises(Saturated):
            pipeline.consume_metrics(export(250, 20), "test")
        pipeline.start(T0)
        assert pipeline.wait_idle(10)
        for total, seconds in ((250, 20), (300, 30)):  # the retry, then the next export
            pipeline.consume_metrics(export(total, seconds), "test")
            assert pipeline.wait_idle(10)  # a queue of one: room for the next
        sid = pipeline.subjects.lookup(PAYMENTS)
        requests = pipeline.windows.values["requests"][sid]
        assert float(requests.sum(dtype=np.float64)) == 300.0
    finally:
        pipeline.stop()
        store.close()
