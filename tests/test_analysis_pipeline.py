"""The analysis stage wired to the incident stage: snapshots, the confidence gate, rollout
modes, the once-a-day COST_ALERT, restart, and the admin route behind `otel-ai analyze`.

(Rewired for issue 9: the analyzer is a stage whose results come back as events, and the
gate is the notification policy's, so the rig builds both; the assertions are the same.)"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from otel_ai.analysis.stage import AnalysisStage
from otel_ai.app import App, Credentials, build_analyzer
from otel_ai.cli import main
from otel_ai.config import load_settings
from otel_ai.model import ROUTE, Anomaly, Subject
from otel_ai.notify.delivery import Delivery
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.policy import NotificationPolicy
from otel_ai.notify.silences import Silences
from otel_ai.pipeline import Pipeline
from otel_ai.store import IncidentStore
from otel_ai.suspects import Attribution
from otel_ai.testing.fake_anthropic import FakeAnthropic, sample_answer
from otel_ai.testing.harness import RecordingExporter, RecordingNotifier

T0 = 1_790_000_000 * 10**9
HOUR_NS = 3600 * 10**9
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def anomaly(n: int, confidence: float = 0.9, event_type: str = "LATENCY_ANOMALY", severity: str = "warning",
            at_ns: int = T0) -> Anomaly:
    return Anomaly(
        type=event_type, severity=severity, subject_id=n, subject=Subject(ROUTE, "checkout", "GET", f"/api/r{n}"),
        metric="latency_p95", unit="ms", value=2400.0, threshold=1000.0, baseline=180.0, window="1m",
        breach_ratio=2.4, trend="rising", confidence=confidence, confidence_factors={},
        recent_samples=[(at_ns - 10**10, 300.0), (at_ns, 2400.0)], sample_count=300, bad_count=120,
        event_time_ns=at_ns, bad_rule="slow", slow_threshold_ms=250.0)


def attribution(_anomaly: Anomaly) -> Attribution:
    return Attribution(
        suspects=[{"key": "service.version", "value": "2.0.0", "score": 0.85, "bad_share": 0.95, "good_share": 0.1}],
        exemplar_trace_ids=["4bf92f3577b34da6a3ce929d0e0e4736"], top_errors=[], 
        new_versions=[{"version": "2.0.0", "first_seen": "2026-09-21T10:00:00Z", "seconds_before_onset": 180.0}],
        bad_requests=40, good_requests=120)


class Rig:
    """Pipeline -> analysis stage, recorder, notification policy -> a recording notifier."""

    def __init__(self, tmp_path: Path, fake: FakeAnthropic | None, mode: str, max_cost: float | None) -> None:
        settings = load_settings(env={"AI_MODE": mode})
        if max_cost is not None:
            settings.budget.max_cost_per_day = max_cost
        self.store = store = IncidentStore(tmp_path / "incidents.db")
        analyzer = build_analyzer(settings, store, api_key="test-key" if fake else "",
                                  base_url=fake.url if fake else None)
        self.analysis = AnalysisStage(analyzer, submit=lambda event: self.pipeline.submit(event))
        self.recorder, self.notifier = RecordingExporter(), RecordingNotifier()
        outbox = Outbox(store)
        policy = NotificationPolicy(settings, [self.notifier], outbox, Silences(store), store)
        self.pipeline = Pipeline(settings, store, [self.analysis, self.recorder, policy], use_wall_clock=False)
        # An hour later: every group_wait has passed.
        self.delivery = Delivery(self.notifier, outbox, clock_ns=lambda: time.time_ns() + HOUR_NS)

    def settle(self, timeout_s: float = 10.0) -> bool:
        """Analyses done and applied, every stage caught up, the outbox delivered."""
        settled = self.pipeline.drain(timeout_s)
        while self.delivery.run_once():
            pass
        return settled


def rig(tmp_path: Path, fake: FakeAnthropic | None, mode: str = "notify", max_cost: float | None = None) -> Rig:
    return Rig(tmp_path, fake, mode, max_cost)


@pytest.fixture
def fake():
    with FakeAnthropic(api_key="test-key") as server:
        yield server


def test_analysis_arrives_as_a_new_snapshot_and_is_stored(tmp_path, fake):
    r = rig(tmp_path, fake)
    pipeline, recorder, store = r.pipeline, r.recorder, r.store
    incident = pipeline.incidents.on_anomaly(anomaly(1), attribution)
    assert r.settle()
    changes = [c.last_change for c in recorder.changes if c.id == incident.id]
    assert changes == ["opened", "analyzed"]
    analyzed = recorder.changes[-1]
    assert analyzed.version == 2 and analyzed.analysis["source"] == "claude"
    assert analyzed.snapshot()["analysis"]["root_causes"] == sample_answer()["root_causes"]
    assert store.get(incident.id).analysis == analyzed.analysis
    # The evidence the model saw is this incident's.
    body = fake.messages_requests()[0].body["messages"][0]["content"]
    assert "/api/r1" in body and "4bf92f3577b34da6a3ce929d0e0e4736" in body and '"2.0.0"' in body


def test_below_min_confidence_is_recorded_but_neither_analyzed_nor_notified(tmp_path, fake):
    r = rig(tmp_path, fake)
    incident = r.pipeline.incidents.on_anomaly(anomaly(2, confidence=0.5), attribution)
    assert r.settle(5)
    assert incident.below_min_confidence and r.store.get(incident.id) is not None
    assert [c.last_change for c in r.recorder.changes] == ["opened"]
    assert r.notifier.sent == [] and fake.requests == []


@pytest.mark.parametrize("mode,notified", [("shadow", False), ("notify", True), ("active", True)])
def test_rollout_modes_gate_notifiers_only(tmp_path, fake, mode, notified):
    r = rig(tmp_path, fake, mode=mode)
    r.pipeline.incidents.on_anomaly(anomaly(3), attribution)
    assert r.settle()
    assert [c.last_change for c in r.recorder.changes] == ["opened", "analyzed"]  # shadow still analyzes and records
    # Undelivered until the policy's group_wait had passed, opened and analyzed collapse into one message.
    assert [m["change"] for m in r.notifier.messages()] == (["analyzed"] if notified else [])


def test_budget_exhaustion_raises_exactly_one_cost_alert(tmp_path, fake):
    usage = {"input_tokens": 4000, "output_tokens": 1500, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    fake.script(*[FakeAnthropic.answer(sample_answer(), usage=usage) for _ in range(60)])
    r = rig(tmp_path, fake, max_cost=0.01)
    pipeline, recorder, store = r.pipeline, r.recorder, r.store
    for n in range(40):
        pipeline.incidents.on_anomaly(anomaly(100 + n), attribution)
    assert r.pipeline.drain(30)
    alerts = [c for c in recorder.changes if c.type == "COST_ALERT" and c.last_change == "opened"]
    assert len(alerts) == 1
    assert alerts[0].data["threshold"] == 0.01 and alerts[0].data["current_value"] <= 0.01
    spent, calls = store.ai_spend_since(0)
    assert 0 < spent <= 0.01 and calls == len(fake.messages_requests())
    analyses = [c.analysis for c in recorder.changes if c.last_change == "analyzed"]
    assert len(analyses) == 41  # 40 routes and the alert itself, each exactly once
    assert {a["offline_reason"] for a in analyses if a["source"] == "offline"} == {"budget_exhausted"}
    # The alert is explained offline (Claude is what ran out), and it is not raised again today.
    assert pipeline.incidents.raise_cost_alert(0.01, 0.01, alerts[0].context["resets_at_ns"]) is None


def test_no_key_gives_offline_analysis_with_the_planted_cause(tmp_path):
    r = rig(tmp_path, None)
    r.pipeline.incidents.on_anomaly(anomaly(4), attribution)
    assert r.pipeline.drain(5)
    analysis = r.recorder.changes[-1].analysis
    assert analysis["source"] == "offline" and analysis["offline_reason"] == "no_api_key"
    assert "2.0.0" in analysis["root_causes"][0]["cause"] and analysis["rollback_needed"] is True


def test_unanalyzed_open_incidents_are_analyzed_after_a_restart(tmp_path, fake):
    settings = load_settings(env={})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    store = IncidentStore(tmp_path / "data" / "incidents.db")
    pipeline = Pipeline(settings, store, [], use_wall_clock=False)  # "crashed" before any analysis
    incident = pipeline.incidents.on_anomaly(anomaly(5, at_ns=T0), attribution)
    assert pipeline.persisted(5)
    store.close()
    app = App(settings, tmp_path / "data", console=False,
              credentials=Credentials(anthropic_api_key="test-key", anthropic_base_url=fake.url))
    app.pipeline.incidents.event_time_ns = T0
    app.start()
    try:
        assert app.pipeline.drain(10)
        assert app.store.get(incident.id).analysis["source"] == "claude"
        assert len(fake.messages_requests()) == 1
    finally:
        app.stop(grace_s=0)


def post(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="POST", data=b"", headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_admin_analyze_route_reruns_and_needs_the_token(tmp_path, fake):
    settings = load_settings(env={"OTEL_AI_ADMIN_TOKEN": "s3cret"})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, tmp_path / "data", console=False,
              credentials=Credentials(anthropic_api_key="test-key", anthropic_base_url=fake.url))
    app.start()
    try:
        incident = app.pipeline.incidents.on_anomaly(anomaly(6), attribution)
        assert app.pipeline.drain(10)
        url = f"http://127.0.0.1:{app.ports.admin}/api/incidents/{incident.id}/analyze"
        assert post(url)[0] == 401
        assert post(url, {"Authorization": "Bearer wrong"})[0] == 401
        assert len(fake.messages_requests()) == 1
        status, snapshot = post(url, {"Authorization": "Bearer s3cret"})
        assert status == 200 and snapshot["change"] == "analyzed" and snapshot["version"] == 3
        assert len(fake.messages_requests()) == 2
        assert post(f"http://127.0.0.1:{app.ports.admin}/api/incidents/inc_nope/analyze",
                    {"Authorization": "Bearer s3cret"})[0] == 404
    finally:
        app.stop(grace_s=0)


def test_cli_analyze_updates_the_store_when_no_server_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    r = rig(tmp_path / "data", None)
    incident = r.pipeline.incidents.on_anomaly(anomaly(7), attribution)
    assert r.pipeline.drain(5)
    r.store.close()
    code = main(["analyze", incident.id, "--data-dir", str(tmp_path / "data"), "--admin-url", "http://127.0.0.1:9"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Root causes:" in out and "2.0.0" in out and "offline analysis: no_api_key" in out
    reopened = IncidentStore(tmp_path / "data" / "incidents.db")
    assert reopened.get(incident.id).version == 3
    reopened.close()
    assert main(["analyze", "inc_missing", "--data-dir", str(tmp_path / "data"), "--offline-store"]) == 1
