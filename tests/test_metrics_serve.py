"""`otel-ai serve` taking metrics from real OpenTelemetry SDK apps (MeterProvider + the
OTLP/gRPC metric exporter, cumulative, its default), into the same windows and detectors
as spans.

Event time is simulated: the apps' SDK clock (otel_ai.testing.sdk_clock) starts about 11
minutes before now and moves 10 s per export, so every force_flush is one 10 s export
interval and the real, wall-clock-driven otel-ai sees ten minutes of traffic in a few
seconds. The same requests go once as metrics and once as spans, and the incidents are
compared.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ai.app import App
from otel_ai.model import INSTANCE, Incident
from otel_ai.testing.sdk_apps import (
    incidents_of,
    metrics_app,
    request_histogram,
    serving_app,
    timeline_start,
    traces_app,
)
from otel_ai.testing.sdk_clock import SdkClock, sdk_clock

NS = 10**9
INTERVAL_S = 10
RATE = 20  # requests per second and route
WARM_S, FAULT_S = 480, 120
CHECKOUT = {"service.name": "checkout", "k8s.pod.name": "checkout-1"}
PAY = {"http.route": "/api/payments", "http.request.method": "POST"}
CART = {"http.route": "/api/cart", "http.request.method": "GET"}
FAULT_ERROR_SHARE = 0.3
FAULT_CART_MEDIAN_S = 0.6  # the cart route slows from ~20 ms to ~600 ms


pytestmark = pytest.mark.usefixtures("loopback_without_proxy")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with serving_app(tmp_path / "data") as running:
        yield running


@dataclass
class Request:
    start_ns: int
    route: dict
    status: int
    duration_s: float


@dataclass
class Traffic:
    """The requests of every 10 s interval: payments fail 30 % and cart slows down in the
    fault; ~0.3 % background errors before it."""

    start_ns: int
    seed: int = 1
    intervals: list[list[Request]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        per_interval = RATE * INTERVAL_S
        for k in range((WARM_S + FAULT_S) // INTERVAL_S):
            t0 = self.start_ns + k * INTERVAL_S * NS
            fault = k * INTERVAL_S >= WARM_S
            requests = []
            for route in (PAY, CART):
                offsets = np.sort(rng.integers(1, INTERVAL_S * NS - NS // 2, per_interval))
                share = FAULT_ERROR_SHARE if fault and route is PAY else 0.003
                failed = rng.random(per_interval) < share
                median = FAULT_CART_MEDIAN_S if fault and route is CART else 0.02
                durations = rng.lognormal(np.log(median), 0.3, per_interval)
                requests += [Request(t0 + int(o), route, 503 if f else 200, float(d))
                             for o, f, d in zip(offsets, failed, durations)]
            self.intervals.append(requests)

    @property
    def fault_start_ns(self) -> int:
        return self.start_ns + WARM_S * NS


def send_as_metrics(app: App, traffic: Traffic, clock: SdkClock) -> set[str]:
    """One export per interval; returns the trace ids of the failing requests recorded
    inside a (sampled, not exported) span during the fault, which exemplars may carry."""
    tracer = TracerProvider().get_tracer("app")
    failing_traces = set()
    with metrics_app(app.ports.grpc, CHECKOUT) as provider:
        histogram = request_histogram(provider)
        for k, requests in enumerate(traffic.intervals):
            for r in requests:
                clock.now_ns = r.start_ns  # when the SDK stamps the measurement (and an exemplar)
                attributes = {**r.route, "http.response.status_code": r.status}
                if r.start_ns >= traffic.fault_start_ns and r.route is PAY:
                    with tracer.start_as_current_span("POST /api/payments") as span:
                        histogram.record(r.duration_s, attributes)
                    if r.status >= 500:
                        failing_traces.add(format(span.get_span_context().trace_id, "032x"))
                else:
                    histogram.record(r.duration_s, attributes)
            clock.now_ns = traffic.start_ns + (k + 1) * INTERVAL_S * NS
            assert provider.force_flush()
    return failing_traces


def send_as_spans(app: App, traffic: Traffic) -> None:
    with traces_app(app.ports.grpc, CHECKOUT) as (provider, processor):
        tracer = provider.get_tracer("app")
        for requests in traffic.intervals:
            for r in requests:
                span = tracer.start_span(f"{r.route['http.request.method']} {r.route['http.route']}",
                                         kind=SpanKind.SERVER, start_time=r.start_ns,
                                         attributes={**r.route, "http.response.status_code": r.status})
                if r.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end(end_time=r.start_ns + int(r.duration_s * NS))
            assert processor.force_flush()


def shape(incident: Incident) -> dict:
    """What an incident looks like, apart from the numbers."""
    snapshot = incident.snapshot()
    return {"type": snapshot["type"], "severity": snapshot["severity"], "subject": incident.subject,
            "metric": snapshot["data"]["metric"], "unit": snapshot["data"]["unit"], "keys": sorted(snapshot),
            "data": sorted(snapshot["data"]), "context": sorted(snapshot["context"])}


def test_metrics_only_app_raises_the_incidents_spans_raise(tmp_path: Path) -> None:
    start = timeline_start(WARM_S + FAULT_S)
    traffic = Traffic(start)
    with serving_app(tmp_path / "m") as from_metrics, serving_app(tmp_path / "s") as from_spans:
        with sdk_clock(start) as clock:
            failing_traces = send_as_metrics(from_metrics, traffic, clock)
        send_as_spans(from_spans, traffic)
        by_metrics, by_spans = incidents_of(from_metrics), incidents_of(from_spans)
        stage = from_metrics.pipeline.metrics_stage
        streams, resets = len(stage.converter), stage.converter.stats.resets
    fault = traffic.fault_start_ns
    print(f"\nmetrics only ({streams} streams, {resets} resets):")
    for incident in by_metrics:
        print(f"  +{(incident.opened_at_ns - fault) / NS:.0f}s {incident.type} {incident.summary} "
              f"({incident.data['window']} window)")
    print("spans only:")
    for incident in by_spans:
        print(f"  +{(incident.opened_at_ns - fault) / NS:.0f}s {incident.type} {incident.summary} "
              f"({incident.data['window']} window)")

    assert {(i.type, i.subject.route) for i in by_metrics} == {("ERROR_RATE_SPIKE", "/api/payments"),
                                                              ("LATENCY_ANOMALY", "/api/cart")}
    assert [shape(i) for i in by_metrics] == [shape(i) for i in by_spans]
    for incident in by_metrics:
        assert 0 < incident.opened_at_ns - fault <= 60 * NS  # within 60 s of event time
    spike = next(i for i in by_metrics if i.type == "ERROR_RATE_SPIKE")
    assert 20 <= spike.data["current_value"] <= 50  # about the 30 % injected
    exemplars = spike.context["exemplar_trace_ids"]
    assert exemplars and set(exemplars) <= failing_traces  # the histograms' exemplars of failing requests
    slow = next(i for i in by_metrics if i.type == "LATENCY_ANOMALY")
    # p95 of ~600 ms requests is ~985 ms; the 1-2.5 s bucket spreads its requests over its bounds
    assert 700 <= slow.data["current_value"] <= 1600


def test_a_process_restart_raises_nothing(app: App) -> None:
    """The same process identity restarts: its cumulative counters begin again from zero,
    with a new start time. Neither the drop nor the first export after it is a spike."""
    start = timeline_start(WARM_S)
    rng = np.random.default_rng(2)
    per_interval = RATE * INTERVAL_S
    with sdk_clock(start) as clock:
        for run_intervals in (30, 18):  # 5 minutes, a restart, 3 more
            with metrics_app(app.ports.grpc, CHECKOUT) as provider:
                histogram = request_histogram(provider)
                for _ in range(run_intervals):
                    for duration in rng.lognormal(np.log(0.02), 0.3, per_interval):
                        histogram.record(float(duration), {**PAY, "http.response.status_code": 200})
                    clock.advance(INTERVAL_S)
                    assert provider.force_flush()
    incidents = incidents_of(app)
    pipeline = app.pipeline
    sid = pipeline.subjects.lookup(next(s for s in pipeline.subjects.subjects if s.route == "/api/payments"))
    closed = pipeline.windows.first_open_slot - 1
    per_slot = pipeline.windows.values["requests"][sid, pipeline.windows.positions(closed, 30)]
    print(f"\nrestart: per-slot requests over the last 5 minutes min {per_slot.min():.0f} max {per_slot.max():.0f} "
          f"(one interval is {per_interval}); {pipeline.metrics_stage.converter.stats}")
    assert incidents == []
    assert per_slot.max() <= 1.2 * per_interval  # no slot holds more than about one interval's requests


def test_cpu_climbing_toward_a_pod_limit_warns_and_a_steady_70_percent_does_not(app: App) -> None:
    start = timeline_start(600)
    rng = np.random.default_rng(3)
    hot = {"service.name": "checkout", "k8s.pod.name": "checkout-hot"}
    calm = {"service.name": "checkout", "k8s.pod.name": "checkout-calm"}
    with sdk_clock(start) as clock:
        def climbing(options: CallbackOptions):  # +3 points a minute from 50 %, a little noise
            yield Observation(0.5 + 0.0005 * (clock.now_ns - start) / NS + float(rng.normal(0, 0.005)))

        def steady(options: CallbackOptions):
            yield Observation(0.7 + float(rng.normal(0, 0.01)))

        with metrics_app(app.ports.grpc, hot) as hot_app, metrics_app(app.ports.grpc, calm) as calm_app:
            hot_app.get_meter("kubeletstats").create_observable_gauge("k8s.pod.cpu_limit_utilization", [climbing])
            calm_app.get_meter("kubeletstats").create_observable_gauge("k8s.pod.cpu_limit_utilization", [steady])
            histogram = request_histogram(hot_app)  # what the pod serves
            for _ in range(60):
                for duration in rng.lognormal(np.log(0.02), 0.3, 100):
                    histogram.record(float(duration), {**PAY, "http.response.status_code": 200})
                clock.advance(INTERVAL_S)
                assert hot_app.force_flush() and calm_app.force_flush()
    incidents = incidents_of(app)
    for incident in incidents:
        print(f"\n{incident.type} {incident.summary}: {incident.data}")
    (warning,) = incidents
    assert warning.type == "CAPACITY_WARNING" and warning.subject.kind == INSTANCE
    assert warning.subject.route == "checkout-hot"
    assert warning.data["resource"] == "cpu" and warning.data["routes"] == ["POST /api/payments"]
    eta = warning.data["time_to_saturation_s"]
    cpu_then = warning.data["current_value"] / 100
    assert 0 < eta <= 3600 and eta == pytest.approx((1 - cpu_then) / 0.0005, rel=0.5)
    assert warning.opened_at_ns - start <= 180 * NS  # once five samples show the rise
