"""Sampled traces from real OpenTelemetry SDK apps into a serving otel-ai.

Head sampling: the app's sampler keeps 1 % of traces (consistently, by trace id) and
writes `th` into tracestate, as OpenTelemetry probability samplers do; otel-ai weighs each
span by its adjusted count. Tail sampling: a stand-in for the Collector's tail_sampling
processor keeps every failing trace and 5 % of the others, records no weight, and the
same app exports its request-duration histogram in full; `otel-ai check` and `/metrics`
must say the traces look tail-sampled.

Spans carry explicit timestamps (the traffic of the last ten minutes, sent in seconds);
metric timestamps come from a simulated SDK clock (otel_ai.testing.sdk_clock).
"""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ai.app import App
from otel_ai.cli import main
from otel_ai.model import ROUTE, Subject
from otel_ai.testing.sdk_apps import (
    TailSampler,
    ThresholdSampler,
    incidents_of,
    metrics_app,
    request_histogram,
    serving_app,
    timeline_start,
    traces_app,
)
from otel_ai.testing.sdk_clock import sdk_clock

NS = 10**9
INTERVAL_S = 10
CHECKOUT = {"service.name": "checkout", "k8s.pod.name": "checkout-1"}
PAY = {"http.route": "/api/payments", "http.request.method": "POST"}
PAYMENTS = Subject(ROUTE, "checkout", "POST", "/api/payments")
ONE_PERCENT = "fd70a4"  # th: 1 in 100 traces kept
# A fault that fails in bursts (per 10 s interval), 27 % of requests on average
BURSTS = (0.45, 0.1, 0.35, 0.05, 0.5, 0.2)

pytestmark = pytest.mark.usefixtures("loopback_without_proxy")


@dataclass
class Traffic:
    """One route's requests, warm then a bursty fault: start times, outcomes, durations."""

    start_ns: int
    rate: int  # requests per second
    warm_s: int
    fault_s: int
    seed: int = 1
    warm_error_share: float = 0.004

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        per_interval = self.rate * INTERVAL_S
        starts, failed = [], []
        for k in range((self.warm_s + self.fault_s) // INTERVAL_S):
            t0 = self.start_ns + k * INTERVAL_S * NS
            fault = k * INTERVAL_S >= self.warm_s
            share = BURSTS[k % len(BURSTS)] if fault else self.warm_error_share
            starts.append(np.sort(t0 + rng.integers(1, INTERVAL_S * NS - NS // 2, per_interval)))
            failed.append(rng.random(per_interval) < share)
        self.starts = np.concatenate(starts)
        self.failed = np.concatenate(failed)
        self.durations_ns = (rng.lognormal(np.log(0.02), 0.3, self.starts.shape[0]) * NS).astype(np.int64)

    @property
    def fault_start_ns(self) -> int:
        return self.start_ns + self.warm_s * NS

    def intervals(self):
        """(start, failed, duration) arrays per 10 s interval."""
        edges = np.searchsorted(self.starts, self.start_ns + np.arange(1, (self.warm_s + self.fault_s) // INTERVAL_S)
                                * INTERVAL_S * NS)
        return zip(np.split(self.starts, edges), np.split(self.failed, edges), np.split(self.durations_ns, edges))


def send_spans(app: App, traffic: Traffic, sampler=None, exporter=None) -> None:
    """Every request is a SERVER span of the app, offered to its sampler; one export per interval."""
    with traces_app(app.ports.grpc, CHECKOUT, sampler=sampler, exporter=exporter, seed=traffic.seed) as (
            provider, processor):
        tracer = provider.get_tracer("app")
        for starts, failed, durations in traffic.intervals():
            for start, fail, duration in zip(starts.tolist(), failed.tolist(), durations.tolist()):
                serve_span(tracer, start, fail, duration)
            assert processor.force_flush()


def serve_span(tracer, start_ns: int, failed: bool, duration_ns: int) -> None:
    """One request to the payments route, as its SERVER span."""
    span = tracer.start_span("POST /api/payments", kind=SpanKind.SERVER, start_time=start_ns,
                             attributes={**PAY, "http.response.status_code": 503 if failed else 200})
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=start_ns + duration_ns)


def windowed(app: App, since_ns: int, until_ns: int) -> dict[str, float]:
    """The route's weighted requests and errors in the windows' slots of [since, until)."""
    pipeline = app.pipeline
    sid = pipeline.subjects.lookup(PAYMENTS)
    windows = pipeline.windows
    slots = np.arange(since_ns // windows.slot_ns, until_ns // windows.slot_ns) % windows.ring
    return {name: float(windows.values[name][sid, slots].sum(dtype=np.float64))
            for name in ("requests", "errors", "squared_weights")}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with serving_app(tmp_path / "data") as running:
        yield running


def test_head_sampled_error_rates_and_counts_are_within_10_percent_of_the_truth(app: App) -> None:
    """1,000 requests a second for five minutes, 1 % of the traces kept. What the windows
    hold over the fault (weighted) against every request the app served."""
    traffic = Traffic(timeline_start(300), rate=1000, warm_s=180, fault_s=120)
    send_spans(app, traffic, sampler=ThresholdSampler(ONE_PERCENT))
    assert app.pipeline.wait_idle(30)
    in_fault = traffic.starts + traffic.durations_ns >= traffic.fault_start_ns  # windows count spans by end time
    truth_requests, truth_errors = int(in_fault.sum()), int(traffic.failed[in_fault].sum())
    seen = windowed(app, traffic.fault_start_ns, traffic.fault_start_ns + traffic.fault_s * NS)
    weight = seen["squared_weights"] / seen["requests"]  # every span kept stands for this many requests
    spans, error_spans = seen["requests"] / weight, seen["errors"] / weight
    truth_rate, rate = truth_errors / truth_requests, seen["errors"] / seen["requests"]
    print(f"\nhead sampling at 1 % (th:{ONE_PERCENT}), fault phase: truth {truth_requests} requests, "
          f"{truth_rate:.2%} failing")
    print(f"  weighted (adjusted count {weight:.2f}): {seen['requests']:.0f} requests "
          f"({seen['requests'] / truth_requests - 1:+.1%}), error rate {rate:.2%} ({rate / truth_rate - 1:+.1%})")
    print(f"  unweighted: {spans:.0f} requests ({spans / truth_requests - 1:+.1%}), {error_spans:.0f} errors "
          f"({error_spans / truth_errors - 1:+.1%}), {spans / traffic.fault_s:.1f} requests/s instead of "
          f"{truth_requests / traffic.fault_s:.0f}")
    assert weight == pytest.approx(100, rel=1e-3)
    assert abs(seen["requests"] / truth_requests - 1) <= 0.10
    assert abs(rate / truth_rate - 1) <= 0.10
    assert spans < 0.02 * truth_requests  # unweighted, the counts are off by about 100x


def test_head_sampled_traces_raise_what_unsampled_traces_raise(tmp_path: Path) -> None:
    """The same app and traffic, once with every trace and once with 1 % of them. At 100
    requests a second, 1 % is one span a second: the detectors weigh the kept spans as
    the few observations they are (Kish's effective sample size), so the sampled run
    needs a little longer, and its rate over a short window is a rough one."""
    traffic = Traffic(timeline_start(420), rate=100, warm_s=300, fault_s=120, seed=2)
    with serving_app(tmp_path / "all") as unsampled, serving_app(tmp_path / "one-percent") as sampled:
        send_spans(unsampled, traffic)
        send_spans(sampled, traffic, sampler=ThresholdSampler(ONE_PERCENT))
        from_all, from_sampled = incidents_of(unsampled), incidents_of(sampled)
        fault_end = traffic.fault_start_ns + traffic.fault_s * NS
        spans_all = windowed(unsampled, traffic.fault_start_ns, fault_end)
        spans_sampled = windowed(sampled, traffic.fault_start_ns, fault_end)
    fault = traffic.fault_start_ns
    for name, found, seen in (("unsampled", from_all, spans_all), ("sampled at 1 %", from_sampled, spans_sampled)):
        kept = seen["requests"] ** 2 / seen["squared_weights"]
        print(f"\n{name}, fault phase: {seen['requests']:.0f} requests weighted from {kept:.0f} spans, "
              f"{seen['errors'] / seen['requests']:.1%} failing")
        for incident in found:
            print(f"  +{(incident.opened_at_ns - fault) / NS:.0f}s {incident.type} {incident.summary} "
                  f"({incident.data['window']} window, {incident.context['sample_count']} requests)")
    assert [(i.type, i.subject) for i in from_sampled] == [(i.type, i.subject) for i in from_all] == [
        ("ERROR_RATE_SPIKE", PAYMENTS)]
    for incident in (*from_all, *from_sampled):
        assert 0 < incident.opened_at_ns - fault <= 60 * NS


def test_tail_sampled_traces_are_flagged_in_check_and_metrics(app: App, tmp_path: Path, capsys) -> None:
    """Steady traffic failing 2 %: every failing trace kept, 5 % of the others. The metrics
    count the route (no incident from the inflated span error share); check says why."""
    traffic = Traffic(timeline_start(300), rate=20, warm_s=300, fault_s=0, seed=3, warm_error_share=0.02)
    tail = TailSampler(OTLPSpanExporter(endpoint=f"127.0.0.1:{app.ports.grpc}", insecure=True, timeout=10),
                       keep_ok=0.05)
    with sdk_clock(traffic.start_ns) as clock, metrics_app(app.ports.grpc, CHECKOUT) as meters, \
            traces_app(app.ports.grpc, CHECKOUT, exporter=tail, seed=traffic.seed) as (tracers, processor):
        histogram = request_histogram(meters)
        tracer = tracers.get_tracer("app")
        for k, (starts, failed, durations) in enumerate(traffic.intervals()):
            for start, fail, duration in zip(starts.tolist(), failed.tolist(), durations.tolist()):
                clock.now_ns = start  # the metric SDK's time of the measurement
                histogram.record(duration / NS, {**PAY, "http.response.status_code": 503 if fail else 200})
                serve_span(tracer, start, fail, duration)
            clock.now_ns = traffic.start_ns + (k + 1) * INTERVAL_S * NS
            assert meters.force_flush() and processor.force_flush()
    assert app.pipeline.wait_idle(30)
    admin = f"http://127.0.0.1:{app.ports.admin}"
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{admin}/metrics", timeout=10) as reply:
        exposed = reply.read().decode()
    main(["check", "--data-dir", str(tmp_path / "check"), "--admin-url", admin])
    out = capsys.readouterr().out
    print(out)
    assert "otel_ai_tail_sampling_suspected 1.0" in exposed
    assert "otel_ai_metric_subjects 1.0" in exposed
    assert "traces of POST /api/payments (checkout) look tail-sampled: span error share far above" in out
    assert "1 routes and dependencies counted from request-duration metrics" in out
    assert incidents_of(app) == []  # the metrics give the counts: no spike from the kept errors
