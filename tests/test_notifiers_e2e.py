"""Slack, PagerDuty and the webhook together, each against its loopback fake, through the
real app: the gate that opens later, inhibition under a failing dependency, PagerDuty's
trigger -> acknowledge -> resolve (from the Slack button and from the CLI), and the
webhook's Alertmanager payload, firing and resolved, signed."""
from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from otel_ai.app import App, Credentials
from otel_ai.cli import main
from otel_ai.config import load_settings
from otel_ai.model import DEPENDENCY, ROUTE, Anomaly, Subject
from otel_ai.suspects import Attribution
from otel_ai.testing.fake_pagerduty import FakePagerDuty
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.fake_webhook import FakeWebhook
from otel_ai.testing.harness import wait_for

S = 10**9
CHANNEL = "#incidents"
SECRET = "webhook-test-secret"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Alertmanager's webhook payload (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config),
# version 4, as a JSON schema: what an existing receiver relies on.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
ALERTMANAGER_WEBHOOK_SCHEMA = {
    "type": "object",
    "required": ["version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                 "commonAnnotations", "externalURL", "alerts"],
    "properties": {
        "version": {"const": "4"},
        "groupKey": {"type": "string", "minLength": 1},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupLabels": _STRING_MAP, "commonLabels": _STRING_MAP, "commonAnnotations": _STRING_MAP,
        "externalURL": {"type": "string"},
        "alerts": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"],
            "properties": {
                "status": {"enum": ["firing", "resolved"]},
                "labels": {**_STRING_MAP, "required": ["alertname"]},
                "annotations": _STRING_MAP,
                "startsAt": {"type": "string", "pattern": _RFC3339},
                "endsAt": {"type": "string", "pattern": _RFC3339},
                "generatorURL": {"type": "string"},
                "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            }}},
    },
}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def fakes():
    with FakeSlack() as slack, FakePagerDuty() as pagerduty, FakeWebhook(secret=SECRET) as webhook:
        yield slack, pagerduty, webhook


def start_app(tmp_path: Path, slack: FakeSlack, pagerduty: FakePagerDuty, webhook: FakeWebhook) -> App:
    settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": CHANNEL, "OTEL_AI_ADMIN_TOKEN": "tok"})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    for rules in (settings.slack, settings.pagerduty, settings.webhook):
        rules.group_wait = 0.5
    settings.pagerduty.events_url = pagerduty.events_url
    settings.webhook.url = webhook.url
    settings.pagerduty.details_url = settings.webhook.details_url = "https://otel-ai.example/incidents/{incident_id}"
    app = App(settings, tmp_path / "data", console=False, credentials=Credentials(
        slack_bot_token="xoxb-test", slack_signing_secret=slack.signing_secret, slack_api_url=slack.url,
        pagerduty_routing_key=pagerduty.routing_key, webhook_secret=SECRET))
    app.start()
    return app


def anomaly(subject: Subject, at_ns: int, confidence: float = 0.95, event_type: str = "ERROR_RATE_SPIKE",
            value: float = 30.0) -> Anomaly:
    return Anomaly(type=event_type, severity="critical", subject_id=0, subject=subject, metric="error_rate", unit="%",
                   value=value, threshold=10.0, baseline=0.5, window="1m", breach_ratio=value / 10, trend="rising",
                   confidence=confidence, confidence_factors={}, recent_samples=[(at_ns, value)], sample_count=200,
                   bad_count=60, event_time_ns=at_ns, bad_rule="error")


def attribution(*suspects: dict):
    return lambda _anomaly: Attribution(list(suspects), ["4bf92f3577b34da6a3ce929d0e0e4736"], [], [], 60, 140)


def posts(slack: FakeSlack, incident_id: str | None = None) -> list:
    return [c for c in slack.calls_to("chat.postMessage") if c.status == 200 and c.response.get("ok")
            and not c.args.get("thread_ts") and (incident_id is None or (c.args.get("metadata") or {}).get(
                "event_payload", {}).get("incident_id") == incident_id)]


def hook_payloads(webhook: FakeWebhook, incident_id: str) -> list[dict]:
    return [p for p in webhook.payloads() if p["alerts"][0]["labels"]["incident_id"] == incident_id]


def resolve(app: App, incident, now_ns: int) -> None:
    """Healthy for the recovery period, in event time."""
    key = (incident.subject, incident.type)
    recovery = int(app.settings.incidents.recovery_period * S)
    app.pipeline.incidents.on_health(now_ns, {key: True})
    app.pipeline.incidents.on_health(now_ns + recovery, {key: True})


def test_confidence_rising_past_min_confidence_notifies_every_notifier_once(tmp_path, fakes):
    slack, pagerduty, webhook = fakes
    app = start_app(tmp_path, slack, pagerduty, webhook)
    try:
        now = time.time_ns()
        subject = Subject(ROUTE, "checkout", "POST", "/api/pay")
        incidents = app.pipeline.incidents
        low = incidents.on_anomaly(anomaly(subject, now, confidence=0.5), attribution())
        assert low.below_min_confidence
        assert app.pipeline.drain(5)
        time.sleep(1.0)  # two group_waits: nothing may go out
        assert posts(slack) == [] and pagerduty.accepted() == [] and webhook.payloads() == []
        sure = incidents.on_anomaly(anomaly(subject, now + 120 * S, confidence=0.9, value=60.0), attribution())
        assert sure.id == low.id and not sure.below_min_confidence and sure.last_change == "updated"
        wait_for("every notifier", lambda: posts(slack, low.id) and pagerduty.triggers()
                 and hook_payloads(webhook, low.id))
        assert app.pipeline.drain(5)
        time.sleep(1.0)
        assert len(posts(slack, low.id)) == 1
        assert [e.dedup_key for e in pagerduty.triggers()] == [low.id]
        assert len(hook_payloads(webhook, low.id)) == 1  # the analysis arrived within group_wait: one POST
        print(f"\ngate: confidence 0.50 -> 0.90; Slack posts {len(posts(slack, low.id))}, PagerDuty triggers "
              f"{len(pagerduty.triggers())}, webhook notifications {len(hook_payloads(webhook, low.id))}")
    finally:
        app.stop(grace_s=0)


def test_a_dependency_failing_under_four_routes_pages_once(tmp_path, fakes):
    slack, pagerduty, webhook = fakes
    app = start_app(tmp_path, slack, pagerduty, webhook)
    try:
        now = time.time_ns()
        incidents = app.pipeline.incidents
        failing = {"key": "dependency.failed", "value": "payments-api", "score": 0.9, "bad_share": 0.93,
                   "good_share": 0.0}
        routes = [incidents.on_anomaly(anomaly(Subject(ROUTE, svc, "POST", route), now), attribution(failing))
                  for svc, route in (("checkout", "/api/pay"), ("checkout", "/api/cart"), ("orders", "/api/orders"),
                                     ("billing", "/api/invoice"))]
        dependency = incidents.on_anomaly(anomaly(Subject(DEPENDENCY, "payments-api", "", "payments-api"), now,
                                                  event_type="CIRCUIT_BREAKER_CANDIDATE", value=80.0), attribution())
        wait_for("the page", lambda: posts(slack) and pagerduty.triggers() and webhook.payloads())
        assert app.pipeline.drain(5)
        time.sleep(1.5)
        assert [e.dedup_key for e in pagerduty.triggers()] == [dependency.id]
        assert [c.args["metadata"]["event_payload"]["incident_id"] for c in posts(slack)] == [dependency.id]
        related = pagerduty.triggers()[0].body["payload"]["custom_details"]["related_incidents"]
        assert len(related) == 4 and {p["alerts"][0]["labels"]["incident_id"] for p in webhook.payloads()} == {
            dependency.id}
        ref = app.outbox.notification("slack", dependency.id).ref
        notes = [m["text"] for m in slack.thread(ref["channel"], ref["ts"])]
        assert sum(n.startswith("🔗 Related") for n in notes) == len(routes), notes
        print(f"\ninhibition: 4 route incidents + the dependency's own -> {len(pagerduty.triggers())} PagerDuty "
              f"trigger, {len(posts(slack))} Slack message ({len(notes)} thread notes), "
              f"{len({p['groupKey'] for p in webhook.payloads()})} webhook group")
    finally:
        app.stop(grace_s=0)


def test_pagerduty_trigger_acknowledge_resolve_from_slack_and_cli(tmp_path, fakes, monkeypatch):
    slack, pagerduty, webhook = fakes
    monkeypatch.setenv("OTEL_AI_ADMIN_TOKEN", "tok")
    app = start_app(tmp_path, slack, pagerduty, webhook)
    try:
        now = time.time_ns()
        incidents = app.pipeline.incidents
        by_button = incidents.on_anomaly(anomaly(Subject(ROUTE, "checkout", "POST", "/api/pay"), now), attribution())
        by_cli = incidents.on_anomaly(anomaly(Subject(ROUTE, "search", "GET", "/api/search"), now), attribution())
        wait_for("both triggers", lambda: len(pagerduty.triggers()) == 2)

        body, headers = slack.signed_action("ack_incident", by_button.id, user_id="U123")
        request = urllib.request.Request(f"http://127.0.0.1:{app.ports.admin}/slack/actions", data=body,
                                         headers=headers, method="POST")
        with _OPENER.open(request, timeout=5) as response:
            assert response.status == 200
        assert main(["incidents", "--data-dir", str(tmp_path / "data"), "ack", by_cli.id, "--by", "bob",
                     "--admin-url", f"http://127.0.0.1:{app.ports.admin}"]) == 0
        wait_for("both acknowledgements", lambda: all(
            [e.action for e in pagerduty.events_for(i.id)] == ["trigger", "acknowledge"] for i in (by_button, by_cli)))

        later = now + 30 * S
        for incident in (by_button, by_cli):
            resolve(app, incident, later)
        wait_for("both resolutions", lambda: all(
            [e.action for e in pagerduty.events_for(i.id)] == ["trigger", "acknowledge", "resolve"]
            for i in (by_button, by_cli)))
        for incident in (by_button, by_cli):
            assert {e.dedup_key for e in pagerduty.events_for(incident.id)} == {incident.id}
            assert pagerduty.alerts[incident.id].status == "resolved"
        trigger = pagerduty.events_for(by_button.id)[0].body
        assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "otel-ai"
        details = trigger["payload"]["custom_details"]
        assert details["exemplar_trace_ids"] == ["4bf92f3577b34da6a3ce929d0e0e4736"]
        assert "Error rate" in details["summary"]
        assert trigger["links"][0]["href"] == f"https://otel-ai.example/incidents/{by_button.id}"
    finally:
        app.stop(grace_s=0)


def test_webhook_payloads_are_alertmanager_shaped_signed_firing_and_resolved(tmp_path, fakes):
    slack, pagerduty, webhook = fakes
    app = start_app(tmp_path, slack, pagerduty, webhook)
    try:
        now = time.time_ns()
        incident = app.pipeline.incidents.on_anomaly(anomaly(Subject(ROUTE, "checkout", "POST", "/api/pay"), now),
                                                     attribution())
        wait_for("firing", lambda: hook_payloads(webhook, incident.id))
        resolve(app, incident, now + 30 * S)
        wait_for("resolved", lambda: any(p["status"] == "resolved" for p in hook_payloads(webhook, incident.id)))
        payloads = hook_payloads(webhook, incident.id)
        for payload in payloads:
            jsonschema.validate(payload, ALERTMANAGER_WEBHOOK_SCHEMA)
        first, last = payloads[0], payloads[-1]
        assert first["status"] == "firing" and first["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert last["status"] == "resolved" and last["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        assert first["alerts"][0]["labels"]["alertname"] == "ERROR_RATE_SPIKE"
        assert first["alerts"][0]["generatorURL"] == f"https://otel-ai.example/incidents/{incident.id}"
        assert len({p["alerts"][0]["fingerprint"] for p in payloads}) == 1  # one alert through its life
        assert all(c.status == 200 for c in webhook.calls)  # every body carried a valid signature
        assert all(c.headers["x-otel-ai-signature-256"].startswith("sha256=") for c in webhook.calls)
    finally:
        app.stop(grace_s=0)
