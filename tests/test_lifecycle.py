"""The incident lifecycle on event time: recovery verification (and its "recovering"
change, the seed's RECOVERY_SIGNAL), relapse, cool-down reopening, stale resolution."""
from __future__ import annotations

import pytest

from otel_ai.config import load_settings
from otel_ai.incidents import IncidentManager
from otel_ai.model import ROUTE, Anomaly, Subject
from otel_ai.notify.blocks import render_incident
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore
from otel_ai.suspects import Attribution
from otel_ai.testing.harness import RecordingExporter

S = 1_000_000_000
T0 = 1_771_164_000 * S
ROUTE_A = Subject(ROUTE, "checkout", "POST", "/api/pay")
KEY = (ROUTE_A, "ERROR_RATE_SPIKE")


@pytest.fixture
def lifecycle(tmp_path):
    settings = load_settings(env={})  # recoveryPeriod 2m, cooldown 10m, staleAfter 15m, updateInterval 1m
    store = IncidentStore(tmp_path / "incidents.db")
    recorder = RecordingExporter()
    yield IncidentManager(settings, store, recorder.export, SelfMetrics()), recorder
    store.close()


def breach(manager: IncidentManager, at_s: float, value: float = 30.0, summary: str | None = None):
    anomaly = Anomaly(
        type="ERROR_RATE_SPIKE", severity="critical", subject_id=0, subject=ROUTE_A, metric="error_rate", unit="%",
        value=value, threshold=10.0, baseline=0.5, window="1m", breach_ratio=value / 10, trend="rising",
        confidence=0.95, confidence_factors={}, recent_samples=[], sample_count=200, bad_count=60,
        event_time_ns=T0 + int(at_s * S), bad_rule="error",
        summary=f"Error rate {value}% on POST /api/pay" if summary is None else summary)
    return manager.on_anomaly(anomaly, lambda a: Attribution([], [], [], [], 0, 0))


def health(manager: IncidentManager, at_s: float, verdict: bool | None) -> None:
    manager.on_health(T0 + int(at_s * S), {KEY: verdict} if verdict is not None else {})


def changes(recorder: RecordingExporter) -> list[str]:
    return [c.last_change for c in recorder.changes]


def test_recovery_is_verified_for_the_recovery_period_and_announced_once(lifecycle):
    manager, recorder = lifecycle
    incident = breach(manager, 0)
    for t in range(10, 130, 10):  # healthy from 10 s on: 110 s of health is not yet 2 minutes
        health(manager, t, True)
    assert incident.status == "open"
    assert changes(recorder) == ["opened", "recovering"]  # once, a minute after the last breach
    recovering = recorder.changes[1]
    assert recovering.updated_at_ns == T0 + 60 * S
    assert recovering.context["recovery"] == {"verifying_since": "2026-02-15T14:00:10Z", "verify_for_s": 120.0}
    assert "Recovering, verifying for 2 min" in str(render_incident(recovering.snapshot()).blocks)
    health(manager, 130, True)
    assert incident.status == "resolved" and incident.context["resolution"] == "recovered"
    assert changes(recorder) == ["opened", "recovering", "resolved"]


def test_health_right_after_a_breach_is_not_announced_as_recovering(lifecycle):
    manager, recorder = lifecycle
    breach(manager, 0)
    for t in (0, 10, 20, 30, 40, 50):  # the last minute still holds the breach's slots
        health(manager, t, True)
    assert changes(recorder) == ["opened"]


def test_a_relapse_during_verification_is_shown_at_once(lifecycle):
    manager, recorder = lifecycle
    incident = breach(manager, 0)
    health(manager, 70, True)
    breach(manager, 80)  # within updateInterval, same value: still worth a change, it relapsed
    assert changes(recorder) == ["opened", "recovering", "updated"]
    assert "recovery" not in incident.context and incident.healthy_since_ns is None
    health(manager, 150, True)  # a new verification, announced again
    assert changes(recorder)[-1] == "recovering"


def test_a_wobble_below_threshold_restarts_verification_without_a_new_change(lifecycle):
    manager, recorder = lifecycle
    incident = breach(manager, 0)
    health(manager, 10, True)
    health(manager, 100, False)  # not healthy (within the hysteresis band), not a breach either
    for t in range(110, 230, 10):
        health(manager, t, True)
    assert incident.status == "open"  # verification restarted at 110 s: 120 s not yet over
    health(manager, 230, True)
    assert incident.status == "resolved"
    assert changes(recorder) == ["opened", "recovering", "resolved"]


def test_a_breach_within_the_cooldown_reopens_the_same_incident(lifecycle):
    manager, recorder = lifecycle
    first = breach(manager, 0)
    for t in range(10, 140, 10):
        health(manager, t, True)
    assert first.status == "resolved"
    again = breach(manager, 140 + 300)  # 5 minutes later: within the 10 minute cool-down
    assert again.id == first.id and again.status == "open" and again.reopen_count == 1
    assert changes(recorder)[-1] == "reopened"
    for t in range(450, 580, 10):
        health(manager, t, True)
    later = breach(manager, 580 + 700)  # resolved again, then past the cool-down: a new incident
    assert later.id != first.id and changes(recorder)[-1] == "opened"


def test_no_traffic_resolves_after_stale_after(lifecycle):
    manager, recorder = lifecycle
    incident = breach(manager, 0)
    health(manager, 899, None)
    assert incident.status == "open"
    health(manager, 900, None)
    assert incident.status == "resolved" and incident.context["resolution"] == "no traffic"


def test_an_anomaly_its_detector_did_not_word_still_gets_a_summary(lifecycle):
    manager, _ = lifecycle
    assert breach(manager, 0, summary="").summary == "Error rate 30.0% on POST /api/pay (threshold 10.0%)"
