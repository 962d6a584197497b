"""Notification policy (silences, grouping, channels, group_wait), delivery edge cases,
and the incidents / silences commands.

(Issue 9: the policy left the Slack notifier and runs for every notifier; these tests
drive it with the Slack notifier, and delivery through the shared delivery worker.
Outbox rows now carry the incident snapshot. The assertions are unchanged.)"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from otel_ai.app import App, Credentials
from otel_ai.cli import main
from otel_ai.config import load_settings
from otel_ai.notifiers.slack import SlackNotifier, make_client
from otel_ai.notify.cause import cause_key
from otel_ai.notify.delivery import Delivery
from otel_ai.notify.outbox import MESSAGE, NOTE, Outbox
from otel_ai.notify.policy import NotificationPolicy
from otel_ai.notify.silences import SilenceError, Silences
from otel_ai.store import IncidentStore
from otel_ai.testing.factory import IncidentFactory
from otel_ai.testing.fake_slack import FakeSlack

NOW = 1_790_000_000 * 10**9
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(tmp_path / "data" / "incidents.db")
    yield s
    s.close()


def notifier(store, **slack) -> NotificationPolicy:
    settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": "#incidents"})
    settings.slack.group_wait = 10.0
    for name, value in slack.items():
        setattr(settings.slack, name, value)
    return NotificationPolicy(settings, [SlackNotifier(settings, make_client("xoxb-test"))], Outbox(store),
                              Silences(store, clock_ns=lambda: NOW), store, clock_ns=lambda: NOW)


def opened(event_type: str = "ERROR_RATE_SPIKE", store=None, **changes):
    incident = IncidentFactory.create_sample(event_type) if not changes.get("id") else IncidentFactory.create(
        event_type, **changes)
    for name, value in changes.items():
        setattr(incident, name, value)
    incident.last_change = "opened"
    if store is not None:
        store.save(incident)
    return incident


def rows(store) -> list[tuple]:
    with store.transaction() as db:
        return db.execute("SELECT incident_id, kind, note_key, due_ns FROM outbox ORDER BY seq").fetchall()


def test_first_message_waits_group_wait_and_updates_collapse(store):
    n = notifier(store)
    incident = opened(store=store)
    n.export(incident)
    assert rows(store) == [(incident.id, MESSAGE, "", NOW + 10 * 10**9)]
    for change in ("updated", "updated", "analyzed"):
        incident.last_change, incident.version = change, incident.version + 1
        n.export(incident)
    kinds = [(r[1], r[2]) for r in rows(store)]
    # One pending message row (collapsed) and the analysis note.
    assert kinds == [(MESSAGE, ""), (NOTE, f"analyzed:{incident.version}")]


def test_silenced_incidents_are_recorded_but_not_notified(store):
    silences = Silences(store, clock_ns=lambda: NOW)
    silence = silences.add({"service": "checkout"}, 3600, "alice", "planned migration")
    n = notifier(store)
    n.silences = silences
    muted = opened(store=store)  # checkout
    n.export(muted)
    other = opened("LATENCY_ANOMALY", store=store)  # orders
    n.export(other)
    assert [r[0] for r in rows(store)] == [other.id]
    assert silences.expire(silence.id)
    muted.last_change = "reopened"
    n.export(muted)
    assert [r[0] for r in rows(store)] == [other.id, muted.id, muted.id]  # message + "reopened" note


def test_silence_requests_are_validated(store):
    silences = Silences(store)
    with pytest.raises(SilenceError, match="unknown matcher"):
        silences.add({"pod": "x"}, 60, "a", "why")
    with pytest.raises(SilenceError, match="at least one matcher"):
        silences.add({}, 60, "a", "why")
    with pytest.raises(SilenceError, match="comment"):
        silences.add({"service": "x"}, 60, "a", " ")
    with pytest.raises(SilenceError, match="duration"):
        silences.add({"service": "x"}, 0, "a", "why")


def test_incidents_with_one_root_cause_share_one_message(store):
    n = notifier(store)
    dependency = opened("CIRCUIT_BREAKER_CANDIDATE", store=store)  # payments-api failing
    route = opened(store=store, id="inc_00000000000000aa", suspects=[
        {"key": "dependency.failed", "value": "payments-api", "score": 0.9, "bad_share": 0.92, "good_share": 0.0}])
    assert cause_key(dependency) == cause_key(route) == "dependency:payments-api"
    n.export(dependency)
    n.export(route)
    messages = [r for r in rows(store) if r[1] == MESSAGE]
    assert [r[0] for r in messages] == [dependency.id]  # no second page
    notes = [r for r in rows(store) if r[1] == NOTE]
    assert notes and notes[0][0] == dependency.id and notes[0][2].startswith(f"related:{route.id}")
    with store.transaction() as db:
        payload = json.loads(db.execute("SELECT payload FROM outbox WHERE kind = 'message'").fetchone()[0])
    assert [r["id"] for r in payload["related"]] == [route.id]


def test_per_severity_channels():
    settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": "#incidents"})
    settings.slack.channels.warning = "#incidents-low"
    assert settings.slack.channel_for("critical") == "#incidents"
    assert settings.slack.channel_for("warning") == "#incidents-low"


def test_a_failed_lookup_never_posts_blind(store):
    settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": "#incidents"})
    incident = opened(store=store)
    outbox = Outbox(store)
    outbox.put_message("slack", incident.id, incident.version, 0, {"incident": incident.snapshot()})
    with FakeSlack() as slack:
        delivery = Delivery(SlackNotifier(settings, make_client("xoxb-test", slack.url)), outbox)
        (entry,) = outbox.next_due("slack", time.time_ns())
        outbox.begin_attempt(entry.seq)  # as if we had crashed mid-post
        slack.fail("conversations.history", "internal_error", status=500)
        delivery.run_once()
        assert slack.calls_to("chat.postMessage") == []
        assert outbox.pending_count() == 1
        (entry,) = outbox.next_due("slack", time.time_ns() + 10**12)
        delivery.deliver(entry)  # the lookup works now and finds nothing: post once
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert outbox.pending_count() == 0


def test_permanent_slack_errors_are_parked_not_retried(store):
    settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": "#incidents"})
    incident = opened(store=store)
    outbox = Outbox(store)
    outbox.put_message("slack", incident.id, incident.version, 0, {"incident": incident.snapshot()})
    with FakeSlack() as slack:
        slack.fail("chat.postMessage", "channel_not_found")
        Delivery(SlackNotifier(settings, make_client("xoxb-test", slack.url)), outbox).run_once()
    assert outbox.counts() == {"dead": 1}


def request(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(req, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_cli_and_api_lifecycle(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings = load_settings(env={"OTEL_AI_ADMIN_TOKEN": "tok"})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    data = tmp_path / "data"
    app = App(settings, data, console=False, credentials=Credentials())
    ports = app.start()
    admin = f"http://127.0.0.1:{ports.admin}"
    try:
        incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
        incident.last_change = "opened"
        app.store.save(incident)
        app.pipeline.incidents.active[(incident.subject, incident.type)] = incident

        assert main(["incidents", "--data-dir", str(data), "list"]) == 0
        assert incident.id in capsys.readouterr().out
        assert main(["incidents", "--data-dir", str(data), "show", incident.id]) == 0
        assert "service.version=2.0.0" in capsys.readouterr().out

        monkeypatch.setenv("OTEL_AI_ADMIN_TOKEN", "tok")
        assert main(["incidents", "--data-dir", str(data), "ack", incident.id, "--by", "bob",
                     "--admin-url", admin]) == 0
        assert app.store.get(incident.id).acknowledged_by == "bob"
        assert request(f"{admin}/api/incidents/{incident.id}/ack", "POST", {"by": "eve"})[0] == 401
        assert request(f"{admin}/api/incidents/inc_missing/ack", "POST", {"by": "eve"}, "tok")[0] == 409

        status, silence = request(f"{admin}/api/silences", "POST",
                                  {"matchers": {"service": "checkout"}, "duration": "1h", "comment": "deploy"}, "tok")
        assert status == 201 and silence["matchers"] == {"service": "checkout"}
        assert request(f"{admin}/api/silences", "POST", {"matchers": {}, "duration": "1h", "comment": "x"},
                       "tok")[0] == 400
        assert [s["id"] for s in request(f"{admin}/api/silences")[1]["silences"]] == [silence["id"]]
        assert main(["silences", "--data-dir", str(data), "expire", silence["id"]]) == 0
        assert request(f"{admin}/api/silences")[1]["silences"] == []
        assert main(["silences", "--data-dir", str(data), "add", "--service", "x", "--duration", "2h",
                     "--comment", "maintenance"]) == 0
        assert "silences {'service': 'x'}" in capsys.readouterr().out
    finally:
        app.stop(grace_s=0)
    # No server: ack goes to the store directly.
    other = IncidentFactory.create("LATENCY_ANOMALY", id="inc_00000000000000bb")
    store = IncidentStore(data / "incidents.db")
    store.save(other)
    store.close()
    assert main(["incidents", "--data-dir", str(data), "ack", other.id, "--admin-url", "http://127.0.0.1:9"]) == 0
    assert "no server running" in capsys.readouterr().out
    store = IncidentStore(data / "incidents.db")
    assert store.get(other.id).status == "acknowledged"
    store.close()
