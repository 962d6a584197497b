"""The generator's fault scenarios, judged like an eval suite: every fault detected,
median delay from onset <= 30 s of event time, the true cause ranked first, and 30
minutes of benign traffic raising nothing."""
from __future__ import annotations

import statistics

import pytest

from otel_ai.testing.harness import run_generator, run_scenarios
from otel_ai.testing.scenarios import SCENARIOS, scenario

WARMUP_S = 600.0
AFTER_ONSET_S = 150.0


@pytest.fixture(scope="module")
def runs():
    return run_scenarios(SCENARIOS, WARMUP_S, AFTER_ONSET_S)


def _matches(incident, subject) -> bool:
    kind, service, method, route = subject
    s = incident.subject
    if kind == "dependency":
        return s.kind == "dependency" and s.service == service
    return s.kind == "route" and (s.service, s.method, s.route) == (service, method, route)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_fault_is_detected_on_its_subjects(runs, name):
    generator, result = runs[name]
    for truth in generator.ground_truth:
        for subject in truth.subjects:
            hits = [i for i in result.incidents if _matches(i, subject) and i.type in truth.types]
            if subject[0] == "route":
                assert hits, f"{name}: no {truth.types} incident on {subject}; got {[i.summary for i in result.incidents]}"
        if all(s[0] == "dependency" for s in truth.subjects):
            hits = [i for i in result.incidents for s in truth.subjects if _matches(i, s) and i.type in truth.types]
            assert hits, f"{name}: dependency not flagged: {truth.subjects}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_true_cause_is_the_first_suspect(runs, name):
    generator, result = runs[name]
    for truth in generator.ground_truth:
        if truth.top_suspect is None:
            continue
        for subject in truth.subjects:
            for incident in result.incidents:
                if _matches(incident, subject) and incident.type in truth.types:
                    top = incident.suspects[0] if incident.suspects else None
                    assert top is not None, f"{name}: no suspects for {incident.summary}"
                    assert (top["key"], top["value"]) == truth.top_suspect, (name, incident.summary, incident.suspects)
                    assert top["bad_share"] > top["good_share"]


def test_median_detection_delay_is_at_most_30s(runs):
    delays = []
    for name, (generator, result) in runs.items():
        for truth in generator.ground_truth:
            opened = [i.opened_at_ns for i in result.incidents for s in truth.subjects
                      if _matches(i, s) and i.type in truth.types]
            if opened:
                delays.append((min(opened) - truth.onset_ns) / 1e9)
    assert delays and all(d >= 0 for d in delays)
    print(f"detection delays (s): {sorted(delays)}")
    assert statistics.median(delays) <= 30.0


def test_incident_fields_follow_the_design_schema(runs):
    _, result = runs["bad_deploy"]
    snapshot = result.incidents[0].snapshot()
    for key in ("id", "type", "severity", "status", "service", "method", "route", "summary", "confidence",
                "opened_at", "updated_at", "resolved_at", "acknowledged_by", "data", "context", "suspects", "analysis"):
        assert key in snapshot
    assert snapshot["type"] == "ERROR_RATE_SPIKE" and snapshot["severity"] == "critical"
    assert 0.0 <= snapshot["confidence"] <= 1.0
    for key in ("metric", "current_value", "threshold", "baseline_value", "window", "trend", "unit", "breach_ratio"):
        assert key in snapshot["data"]
    assert snapshot["data"]["trend"] in ("rising", "stable", "falling")
    assert snapshot["context"]["exemplar_trace_ids"] and len(snapshot["context"]["exemplar_trace_ids"][0]) == 32
    assert snapshot["context"]["top_errors"][0]["count"] >= 1
    assert snapshot["context"]["new_versions"], "the new version should be reported as first seen before onset"


def test_thirty_minutes_of_benign_traffic_raise_nothing():
    generator = scenario("benign", seed=3)
    result = run_generator(generator, 1800.0)
    assert result.spans > 1_000_000
    assert result.incidents == [], [i.summary for i in result.incidents]
