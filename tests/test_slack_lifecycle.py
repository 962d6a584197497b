"""End to end over real HTTP: OTLP spans -> incident -> one Slack message in the seed's
layout -> updated with the analysis -> signed Acknowledge -> no more reminders ->
recovery -> the resolved update. Slack and Claude are the loopback fakes."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai.app import App, Credentials
from otel_ai.config import Settings, load_settings
from otel_ai.model import Incident
from otel_ai.notify.cause import notification_key
from otel_ai.testing.fake_anthropic import FakeAnthropic, sample_answer
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.harness import wait_for
from otel_ai.testing.scenarios import steady_noise
from otel_ai.testing.traffic import Fault, TrafficGenerator

CHANNEL = "#incidents"
NS = 1_000_000_000
WARMUP_S, FAULT_S, RECOVERY_S = 360.0, 150.0, 240.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def lifecycle_settings(**slack) -> Settings:
    settings = load_settings(env={"AI_MODE": "notify", "SLACK_INCIDENT_CHANNEL": CHANNEL})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    settings.slack.group_wait = 0.2
    for name, value in slack.items():
        setattr(settings.slack, name, value)
    return settings


def credentials(slack: FakeSlack, claude: FakeAnthropic | None = None) -> Credentials:
    return Credentials(anthropic_api_key="test-key" if claude else "", anthropic_base_url=claude.url if claude else None,
                       slack_bot_token="xoxb-test", slack_signing_secret=slack.signing_secret, slack_api_url=slack.url)


class Traffic:
    """A checkout route whose calls to one dependency fail for FAULT_S, in the recent past."""

    def __init__(self, fault: str = "dependency_errors") -> None:
        total = WARMUP_S + FAULT_S + RECOVERY_S
        start = time.time_ns() - int((total + 30) * NS)
        self.generator = TrafficGenerator(seed=3, start_ns=start, noise=steady_noise(), faults=[
            Fault(fault, start_s=WARMUP_S, params={"duration_s": FAULT_S, "rate": 0.6})])

    def send(self, port: int, seconds: float) -> None:
        for body in self.generator.serialized_batches(seconds, interval_s=5.0):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST",
                                             headers={"Content-Type": "application/x-protobuf"})
            with _OPENER.open(request, timeout=10) as response:
                assert response.status == 200




def lifecycle_state(app: App, slack: FakeSlack, traffic: Traffic, message: tuple[str, str]) -> str:
    """Where an incident's life stopped, for a test that timed out waiting on it."""
    lines = [f"event time {(app.pipeline.incidents.event_time_ns - traffic.generator.start_ns) / NS:.0f}s into the "
             f"traffic; outbox {app.outbox.counts()}; header "
             f"{slack.messages[message]['blocks'][0]['text']['text']!r}"]
    for i in app.store.list():
        lines.append(f"{i.id} {i.type} {i.subject.service} {i.status} problem={i.problem_id} opened "
                     f"{(i.opened_at_ns - traffic.generator.start_ns) / NS:.0f}s resolved "
                     + (f"{(i.resolved_at_ns - traffic.generator.start_ns) / NS:.0f}s" if i.resolved_at_ns else "-"))
    calls = [f"{c.method}:{c.status}:{(c.response or {}).get('error') or 'ok'}" for c in slack.calls[-20:]]
    return "\n".join([*lines, "last Slack calls: " + " ".join(calls)])


def top_level_posts(slack: FakeSlack, incident: Incident) -> list:
    """The messages the incident leads: keyed by its problem when it has one."""
    return [c for c in slack.calls_to("chat.postMessage") if c.status == 200 and c.response.get("ok")
            and not c.args.get("thread_ts")
            and (c.args.get("metadata") or {}).get("event_payload", {}).get("incident_id") == notification_key(incident)
            and c.args["blocks"][-1]["elements"][0]["text"].strip("`") == incident.id]


def block_text(message: dict) -> str:
    parts = []
    for block in message.get("blocks") or []:
        for key in ("text",):
            if isinstance(block.get(key), dict):
                parts.append(block[key].get("text", ""))
        for item in block.get("fields") or []:
            parts.append(item.get("text", ""))
        for item in block.get("elements") or []:
            text = item.get("text")
            parts.append(text.get("text", "") if isinstance(text, dict) else str(text or ""))
    return "\n".join(parts)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeAnthropic]]:
    with FakeSlack() as slack, FakeAnthropic(api_key="test-key") as claude:
        # The analysis arrives a moment after the first message, as with the real API.
        claude.script(*[FakeAnthropic.answer(sample_answer(), delay_s=1.0) for _ in range(10)])
        yield slack, claude


def test_one_message_per_incident_through_analysis_ack_and_recovery(tmp_path: Path, fakes) -> None:
    slack, claude = fakes
    app = App(lifecycle_settings(repeat_interval=1.0), tmp_path / "data", console=False,
              credentials=credentials(slack, claude))
    ports = app.start()
    try:
        traffic = Traffic()
        traffic.send(ports.http, WARMUP_S + FAULT_S - 30)
        # One message for the fault's problem, led by the failing dependency's own incident.
        lead = wait_for("the problem's message", lambda: next(
            (i for i in app.store.list() if top_level_posts(slack, i)), None))
        assert lead.problem_id and lead.subject.service == "shipping"
        assert {i.problem_id for i in app.store.list()} == {lead.problem_id}
        posts = top_level_posts(slack, lead)
        channel, ts = posts[0].response["channel"], posts[0].response["ts"]

        # The seed's layout: header with the severity emoji and type, the Acknowledge button.
        first = posts[0].args
        assert first["blocks"][0]["type"] == "header"
        assert lead.type.replace("_", " ") in first["blocks"][0]["text"]["text"]  # the seed replaces _ with spaces
        buttons = [e for b in first["blocks"] if b["type"] == "actions" for e in b["elements"]]
        ack = next(b for b in buttons if b.get("action_id") == "ack_incident")
        assert ack["value"] == lead.id
        assert lead.subject.service in first["text"]

        # The analysis arrives as an update of the same message.
        wait_for("the analysis update", lambda: "AI Analysis" in block_text(slack.messages[(channel, ts)]))
        assert "80%" in block_text(slack.messages[(channel, ts)])
        # Unacknowledged, it is repeated in the thread (repeat_interval 1 s here).
        wait_for("a reminder", lambda: any("Still open" in m["text"] for m in slack.thread(channel, ts)))

        body, headers = slack.signed_action("ack_incident", lead.id, user_id="U123", channel=channel,
                                            message_ts=ts)
        request = urllib.request.Request(f"http://127.0.0.1:{ports.admin}/slack/actions", data=body,
                                         headers=headers, method="POST")
        started = time.monotonic()
        with _OPENER.open(request, timeout=5) as response:
            assert response.status == 200
        assert time.monotonic() - started < 3.0  # Slack's deadline
        wait_for("the acknowledged update", lambda: "Acknowledged by <@U123>" in block_text(
            slack.messages[(channel, ts)]))
        wait_for("the acknowledged note", lambda: any("acknowledged by <@U123>" in m["text"]
                                                      for m in slack.thread(channel, ts)))
        stored = app.store.get(lead.id)
        assert stored.status == "acknowledged" and stored.acknowledged_by == "U123"
        buttons = [e for b in slack.messages[(channel, ts)]["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]
        assert not any(b.get("action_id") == "ack_incident" for b in buttons)
        time.sleep(1.0)  # any reminder queued before the ack has gone out by now
        reminders = sum("Still open" in m["text"] for m in slack.thread(channel, ts))
        time.sleep(2.5)
        assert sum("Still open" in m["text"] for m in slack.thread(channel, ts)) == reminders

        traffic.send(ports.http, 30 + RECOVERY_S)
        # Resolved by the time the send returns, normally; the margin covers a delivery
        # retried after a timeout on a loaded machine (10 s timeout, then backoff).
        wait_for("the resolved update", lambda: "RESOLVED" in slack.messages[(channel, ts)]["blocks"][0]["text"]["text"],
                 timeout_s=60, explain=lambda: lifecycle_state(app, slack, traffic, (channel, ts)))
        wait_for("the resolved note", lambda: any("Resolved after" in m["text"] for m in slack.thread(channel, ts)))
        # Exactly one top-level message for the incident through its whole life.
        assert len(top_level_posts(slack, lead)) == 1
        assert slack.messages[(channel, ts)]["edits"] >= 3
        # One Claude call per problem (or incident outside one); its members share the answer.
        assert len(claude.messages_requests()) == len({notification_key(i) for i in app.store.list()
                                                       if i.analysis and i.analysis["source"] == "claude"})
    finally:
        app.stop(grace_s=0)


def admin_post(port: int, path: str, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_bad_slack_requests_change_nothing(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        app = App(lifecycle_settings(), tmp_path / "data", console=False, credentials=credentials(slack))
        ports = app.start()
        try:
            from otel_ai.model import ROUTE, Anomaly, Subject
            from otel_ai.suspects import Attribution

            now = time.time_ns()
            incident = app.pipeline.incidents.on_anomaly(Anomaly(
                type="ERROR_RATE_SPIKE", severity="critical", subject_id=0,
                subject=Subject(ROUTE, "checkout", "POST", "/api/pay"), metric="error_rate", unit="%", value=30.0,
                threshold=10.0, baseline=0.5, window="1m", breach_ratio=3.0, trend="rising", confidence=0.95,
                confidence_factors={}, recent_samples=[(now, 30.0)], sample_count=200, bad_count=60,
                event_time_ns=now, bad_rule="error"), lambda a: Attribution([], [], [], [], 0, 0))
            assert app.pipeline.drain(5)  # the offline analysis is a change of its own; let it land first
            version = app.store.get(incident.id).version
            good_body, good_headers = slack.signed_action("ack_incident", incident.id)
            cases = {
                "wrong secret": slack.signed_action("ack_incident", incident.id, secret="not-the-secret"),
                "stale": slack.signed_action("ack_incident", incident.id, timestamp=int(time.time()) - 600),
                "tampered": (good_body.replace(b"U123", b"U999"), good_headers),
                "unsigned": (good_body, {"Content-Type": "application/x-www-form-urlencoded"}),
            }
            for name, (body, headers) in cases.items():
                assert admin_post(ports.admin, "/slack/actions", body, headers) == 401, name
            malformed = slack.signed_action("ack_incident", "../../etc/passwd")
            assert admin_post(ports.admin, "/slack/actions", *malformed) == 400
            assert app.store.get(incident.id).status == "open"
            assert app.store.get(incident.id).version == version
            # The genuine click works once; its replay is refused.
            assert admin_post(ports.admin, "/slack/actions", good_body, good_headers) == 200
            assert admin_post(ports.admin, "/slack/actions", good_body, good_headers) == 401
            assert app.store.get(incident.id).acknowledged_by == "U123"
        finally:
            app.stop(grace_s=0)
