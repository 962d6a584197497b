"""Every detector on its own, river-style: feed window statistics slot by slot (no spans,
no incidents), then check that it fires or stays quiet, on the right subject, with the
right numbers."""
from __future__ import annotations

import pytest

from otel_ai.config import load_settings
from otel_ai.detectors import BUILT_IN, build_detectors
from otel_ai.detectors.base import HEALTHY_FRACTION
from otel_ai.model import DEPENDENCY, ROUTE, Subject
from otel_ai.testing.slots import SlotFeeder

RULES = load_settings(env={}).events
ROUTE_A = Subject(ROUTE, "shop", "GET", "/a")
ROUTE_B = Subject(ROUTE, "shop", "POST", "/login")
DEP = Subject(DEPENDENCY, "orders-db", "", "orders-db")
WARM_SLOTS = 60  # ten minutes of normal traffic: a warm baseline


def feeder(event_type: str, subjects=(ROUTE_A, ROUTE_B, DEP)) -> SlotFeeder:
    return SlotFeeder(BUILT_IN[event_type](RULES[event_type]), list(subjects))


def only(found, subject):
    assert found, "expected an anomaly"
    assert {a.subject for a in found} == {subject}
    return found[0]


# --------------------------------------------------------------------------- the interface

@pytest.mark.parametrize("event_type", sorted(BUILT_IN))
def test_every_built_in_detector_has_the_one_interface(event_type):
    detector = BUILT_IN[event_type](RULES[event_type])
    assert detector.event_type == event_type
    assert detector.counters and all(c.name for c in detector.counters)
    assert all(c.select is not None for c in detector.captures)  # captures mark requests as bad
    assert f"minSamples {RULES[event_type].min_samples}" in detector.describe()
    assert all(callable(getattr(detector, m)) for m in ("detect", "healthy", "current", "describe"))
    assert callable(type(detector).summary)


def test_default_config_builds_all_eight_detectors_in_a_fixed_order():
    built = [d.event_type for d in build_detectors(load_settings(env={}))]
    assert built == list(BUILT_IN) and len(built) == 8


# --------------------------------------------------------------------------- errors and latency

def test_error_rate_spike_fires_on_the_route_with_its_numbers():
    f = feeder("ERROR_RATE_SPIKE")
    assert f.run(WARM_SLOTS, {ROUTE_A: {"requests": 100, "errors": 1}, ROUTE_B: {"requests": 100, "errors": 1}}) == []
    found = f.slot({ROUTE_A: {"requests": 100, "errors": 30}, ROUTE_B: {"requests": 100, "errors": 1}})
    spike = only(found, ROUTE_A)
    assert (spike.value, spike.threshold, spike.window, spike.unit) == (30.0, 3.0, "10s", "%")
    assert spike.baseline == pytest.approx(1.0, abs=0.1)  # the baseline of 1 %, with its prior
    assert (spike.sample_count, spike.bad_count, spike.bad_rule) == (100, 30, "error")
    assert spike.summary.startswith("Error rate 30.0% on GET /a (threshold 3%, baseline")


def test_error_rate_spike_stays_quiet_on_a_steadily_flaky_route_and_on_little_traffic():
    f = feeder("ERROR_RATE_SPIKE")
    # A: 5 % errors every minute; B: 3 requests a minute, a fifth of them failing.
    steady = {ROUTE_A: {"requests": 100, "errors": 5}, ROUTE_B: {"requests": 0.5, "errors": 0.1}}
    assert f.run(WARM_SLOTS, steady) == []
    # 5 % -> 7 %: inside the flaky route's threshold (baseline + 2 points).
    assert f.run(6, {**steady, ROUTE_A: {"requests": 100, "errors": 7}}) == []


def test_latency_anomaly_fires_on_p95_far_above_the_baseline():
    f = feeder("LATENCY_ANOMALY")
    assert f.run(WARM_SLOTS, {ROUTE_A: {"requests": 100}}, {ROUTE_A: (100, 40.0)}) == []
    assert f.run(3, {ROUTE_A: {"requests": 100}}, {ROUTE_A: (100, 44.0)}) == []  # +10 %: quiet
    slow = only(f.slot({ROUTE_A: {"requests": 100}}, {ROUTE_A: (100, 600.0)}), ROUTE_A)
    assert slow.metric == "latency_p95" and 500 < slow.value < 800 and slow.threshold < 200
    assert slow.bad_rule == "slow" and slow.slow_threshold_ms == pytest.approx(slow.threshold, abs=0.01)


def test_circuit_breaker_only_on_dependencies_and_only_past_half():
    f = feeder("CIRCUIT_BREAKER_CANDIDATE")
    f.run(WARM_SLOTS, {ROUTE_A: {"requests": 100}, DEP: {"requests": 100}})
    assert f.run(3, {ROUTE_A: {"requests": 100, "errors": 90}, DEP: {"requests": 100, "errors": 35}}) == []
    broken = only(f.slot({DEP: {"requests": 100, "errors": 80}}), DEP)
    assert broken.value == 80.0 and broken.threshold == 50.0
    assert broken.summary.startswith("Circuit breaker candidate: 80.0% of calls to orders-db failing")


def test_upstream_degradation_reports_errors_over_latency_when_both_fire():
    f = feeder("UPSTREAM_DEGRADATION")
    f.run(WARM_SLOTS, {DEP: {"requests": 100}}, {DEP: (100, 5.0)})
    slow = only(f.slot({DEP: {"requests": 100}}, {DEP: (100, 900.0)}), DEP)
    assert slow.metric == "latency_p95" and slow.summary.startswith("p95 latency")
    both = only(f.slot({DEP: {"requests": 100, "errors": 40}}, {DEP: (100, 900.0)}), DEP)
    assert both.metric == "error_rate" and both.value == 40.0


# --------------------------------------------------------------------------- rate limits

def test_rate_limit_breach_needs_a_sustained_share_not_a_burst():
    f = feeder("RATE_LIMIT_BREACH")
    normal = {ROUTE_A: {"requests": 100, "throttled": 1}}
    assert f.run(WARM_SLOTS, normal) == []
    # Two slots (20 s) with 40 % refused: the limiter working; a 1 m window holds 13 %.
    assert f.run(2, {ROUTE_A: {"requests": 100, "throttled": 40}}) == []
    assert f.run(6, normal) == []
    found = f.run(6, {ROUTE_A: {"requests": 100, "throttled": 40}})
    breach = only(found, ROUTE_A)
    assert breach.window == "1m" and breach.threshold == 25.0 and 25.0 <= breach.value <= 40.0
    assert (breach.metric, breach.bad_rule) == ("http_429_rate", "throttled")
    assert breach.suspect_keys[0] == "tenant.id"
    assert breach.summary.startswith(f"Rate limit breach: {breach.value:.1f}% of GET /a refused with 429")


def test_rate_limit_breach_does_not_judge_a_window_it_has_not_seen_whole():
    f = feeder("RATE_LIMIT_BREACH")
    # Right after start, 30 s of bursting would be the whole "1 m" window: not judged yet.
    assert f.run(3, {ROUTE_A: {"requests": 100, "throttled": 40}}) == []


# --------------------------------------------------------------------------- auth failures

def test_security_anomaly_fires_on_a_surge_and_not_on_the_usual_failed_passwords():
    f = feeder("SECURITY_ANOMALY")
    usual = {ROUTE_B: {"requests": 40, "auth_failures": 3}}  # 7.5 % mistyped passwords
    assert f.run(WARM_SLOTS, usual) == []
    assert f.run(3, {ROUTE_B: {"requests": 40, "auth_failures": 7}}) == []  # a bad minute: 17.5 %
    stuffing = only(f.slot({ROUTE_B: {"requests": 240, "auth_failures": 200}}), ROUTE_B)
    assert stuffing.severity == "critical" and stuffing.window == "10s"
    assert stuffing.value == pytest.approx(83.33, abs=0.01) and stuffing.threshold == 20.0
    assert stuffing.bad_rule == "auth_failures" and "enduser.id" in stuffing.tally_keys
    assert stuffing.suspect_keys[0] == "client.address"


def test_security_threshold_follows_a_route_that_usually_fails_often():
    f = feeder("SECURITY_ANOMALY")
    f.run(WARM_SLOTS, {ROUTE_B: {"requests": 100, "auth_failures": 15}})
    # At 15 % usual, 22 % is below its threshold of baseline + 10 points.
    assert f.run(6, {ROUTE_B: {"requests": 100, "auth_failures": 22}}) == []
    assert only(f.slot({ROUTE_B: {"requests": 100, "auth_failures": 60}}), ROUTE_B).threshold > 24.0


# --------------------------------------------------------------------------- retries

def test_retry_storm_measures_calls_per_request_against_the_usual_and_escalates():
    f = feeder("RETRY_STORM")
    usual = {DEP: {"requests": 100, "retries": 10}}  # a second call to it from 10 % of parents
    assert f.run(WARM_SLOTS, usual) == []
    assert f.run(3, {DEP: {"requests": 100, "retries": 20}}) == []  # 1.25 vs 1.11 per request: normal
    storm = only(f.slot({DEP: {"requests": 300, "retries": 210}}), DEP)
    assert storm.metric == "calls_per_request" and storm.unit == "x"
    assert storm.value == pytest.approx(3.33, abs=0.01) and storm.baseline == pytest.approx(1.11, abs=0.01)
    assert storm.details["amplification"] == pytest.approx(3.0, abs=0.05)
    assert storm.severity == "critical"  # >= criticalAt (3x)
    assert storm.bad_rule == "retries" and storm.suspect_keys == ("service.name",)
    assert storm.summary.startswith("Retry storm on calls to orders-db: 3.3 calls per request, 3.0x amplification")


def test_retry_storm_below_critical_amplification_keeps_the_configured_severity():
    f = feeder("RETRY_STORM")
    f.run(WARM_SLOTS, {DEP: {"requests": 100, "retries": 0}})
    storm = only(f.slot({DEP: {"requests": 200, "retries": 110}}), DEP)
    assert 2.0 <= storm.details["amplification"] < 3.0 and storm.severity == "warning"


# --------------------------------------------------------------------------- capacity

def capacity_feeder() -> SlotFeeder:
    f = feeder("CAPACITY_WARNING", (ROUTE_A,))
    # 10 requests/s of 20 ms: 0.2 requests in flight on average.
    f.run(WARM_SLOTS, {ROUTE_A: {"requests": 100, "busy_ms": 2000}}, {ROUTE_A: (100, 20.0)})
    return f


def test_capacity_warning_fires_when_latency_rises_with_load_and_says_when_it_saturates():
    f = capacity_feeder()
    found = []
    for step in range(6):  # load climbing from 2.4x, latency 2.5x the usual
        n = 240 + 20 * step
        found += f.slot({ROUTE_A: {"requests": n, "busy_ms": n * 50}}, {ROUTE_A: (n, 50.0)})
    warning = found[0]
    assert warning.subject == ROUTE_A and warning.metric == "utilization_estimate" and warning.value >= 50.0
    assert found[-1].value == pytest.approx(60.0, abs=0.1)  # a whole minute at 50 ms: 1 - 20 ms / 50 ms
    assert f.detector.current(f.view, f.sid(ROUTE_A), "utilization_estimate") == pytest.approx(60.0, abs=0.1)
    assert warning.details["baseline_latency_mean_ms"] == pytest.approx(20.0, abs=0.1)
    assert warning.details["baseline_request_rate_per_s"] == pytest.approx(10.0, abs=0.01)
    assert warning.details["request_rate_per_s"] >= 1.5 * warning.details["baseline_request_rate_per_s"]
    assert warning.details["time_to_saturation_s"] > 0  # the rate is still climbing
    assert warning.bad_rule == "slow" and warning.baseline is None


def test_capacity_stays_quiet_on_an_absorbed_surge_a_slow_dependency_and_failures():
    f = capacity_feeder()
    # 5x the load, latency +15 %: the route absorbs it.
    assert f.run(12, {ROUTE_A: {"requests": 500, "busy_ms": 500 * 23}}, {ROUTE_A: (500, 23.0)}) == []
    f = capacity_feeder()
    # 3x slower without more load: a slow dependency, not capacity.
    assert f.run(12, {ROUTE_A: {"requests": 100, "busy_ms": 100 * 60}}, {ROUTE_A: (100, 60.0)}) == []
    f = capacity_feeder()
    # More load and slower, but a fifth fail: that is an error incident.
    assert f.run(12, {ROUTE_A: {"requests": 300, "busy_ms": 300 * 60, "errors": 60}}, {ROUTE_A: (300, 60.0)}) == []


# --------------------------------------------------------------------------- hysteresis

@pytest.mark.parametrize("event_type, bad", [("ERROR_RATE_SPIKE", "errors"), ("SECURITY_ANOMALY", "auth_failures"),
                                             ("RATE_LIMIT_BREACH", "throttled")])
def test_healthy_only_below_a_fraction_of_the_threshold(event_type, bad):
    f = feeder(event_type)
    f.run(WARM_SLOTS, {ROUTE_A: {"requests": 100}})
    threshold = only(f.run(6, {ROUTE_A: {"requests": 100, bad: 80}}), ROUTE_A).threshold
    f.frozen[:] = True  # as for a subject with an open incident: the baseline stops learning
    f.run(6, {ROUTE_A: {"requests": 100, bad: threshold * 0.95}})  # under the threshold, above the band
    assert f.healthy(ROUTE_A) is False
    f.run(6, {ROUTE_A: {"requests": 100, bad: threshold * HEALTHY_FRACTION * 0.8}})
    assert f.healthy(ROUTE_A) is True
    assert f.healthy(ROUTE_B) is None  # no traffic, no verdict
    # The metric now (a resolved incident's value at recovery): the last minute's share.
    now = f.detector.current(f.view, f.sid(ROUTE_A), f.detector.metric)
    assert now == pytest.approx(threshold * HEALTHY_FRACTION * 0.8, abs=0.01)
    assert f.detector.current(f.view, f.sid(ROUTE_B), f.detector.metric) is None
