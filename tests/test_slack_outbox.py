"""Nothing lost, nothing doubled: kill -9 around delivery, and a minute of 429s.

The crash tests run the real `otel-ai serve` as a subprocess against the fake Slack
(and, issue 9, the fake PagerDuty and webhook receiver), SIGKILL it at the worst
moments, restart it on the same data directory, and count the top-level messages Slack
received for the incident, the PagerDuty triggers and the webhook notifications. The
minute of 429s is Slack's and PagerDuty's and the webhook's at once, in one run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_slack_lifecycle import (
    CHANNEL,
    FAULT_S,
    WARMUP_S,
    App,
    Traffic,
    block_text,
    credentials,
    lifecycle_settings,
)

from otel_ai.app import Credentials
from otel_ai.notify.cause import notification_key, rank
from otel_ai.notify.outbox import Outbox
from otel_ai.store import IncidentStore
from otel_ai.testing.fake_pagerduty import FakePagerDuty
from otel_ai.testing.fake_slack import FakeSlack, Step
from otel_ai.testing.fake_webhook import FakeWebhook
from otel_ai.testing.harness import wait_for

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


class Server:
    """`otel-ai serve` in a child process, on free ports, with Slack pointed at the fake."""

    def __init__(self, data_dir: Path, slack: FakeSlack, pagerduty: FakePagerDuty | None = None,
                 webhook: FakeWebhook | None = None) -> None:
        config = data_dir.parent / "otel-ai.yaml"
        config.write_text("mode: notify\nslack:\n  groupWait: 0.2s\npagerduty:\n  groupWait: 0.2s\n"
                          "webhook:\n  groupWait: 0.2s\n")
        env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": slack.url,
               "SLACK_INCIDENT_CHANNEL": CHANNEL, "SLACK_SIGNING_SECRET": slack.signing_secret,
               "ANTHROPIC_API_KEY": "", "NO_PROXY": "127.0.0.1"}
        if pagerduty is not None:
            env.update(PAGERDUTY_ROUTING_KEY=pagerduty.routing_key, PAGERDUTY_EVENTS_URL=pagerduty.events_url)
        if webhook is not None:
            env.update(AI_WEBHOOK_URL=webhook.url)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_ai", "serve", "--config", str(config), "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--admin-port", "0"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.http_port = self._ports()

    def _ports(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"OTLP/HTTP :(\d+)", line)
            if match:
                threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep the pipe drained
                return int(match.group(1))
            if not line and self.process.poll() is not None:
                break
        pytest.fail("otel-ai serve did not start")

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


def pending_incidents(data_dir: Path) -> list[str]:
    """The keys of notifications queued and not yet delivered (an incident's, or its problem's)."""
    store = IncidentStore(data_dir / "incidents.db")
    try:
        outbox = Outbox(store)
        keys = {notification_key(i) for i in store.list()}
        return sorted(k for k in keys if outbox.has_notification("slack", k) and outbox.notification("slack", k) is None)
    finally:
        store.close()


def posted_incident_ids(slack: FakeSlack) -> list[str]:
    return [(c.args.get("metadata") or {}).get("event_payload", {}).get("incident_id")
            for c in slack.calls_to("chat.postMessage")
            if c.status == 200 and c.response.get("ok") and not c.args.get("thread_ts")]


def firing(webhook: FakeWebhook, key: str) -> list[dict]:
    return [p for p in webhook.payloads() if p["status"] == "firing" and f'incident="{key}"' in p["groupKey"]]


def test_kill9_between_detection_and_delivery_delivers_once(tmp_path: Path) -> None:
    with FakeSlack() as slack, FakePagerDuty() as pagerduty, FakeWebhook() as webhook:
        slack.down(3600)  # every notifier unreachable: the notifications wait in the outbox
        pagerduty.down(3600)
        webhook.down(3600)
        data = tmp_path / "data"
        server = Server(data, slack, pagerduty, webhook)
        try:
            Traffic().send(server.http_port, WARMUP_S + FAULT_S - 30)
            waiting = wait_for("incidents queued for Slack", lambda: pending_incidents(data))
            server.kill9()
        finally:
            server.stop()
        assert posted_incident_ids(slack) == [] and pagerduty.accepted() == [] and webhook.payloads() == []
        slack.recover()
        pagerduty.recover()
        webhook.recover()
        server = Server(data, slack, pagerduty, webhook)
        try:
            wait_for("delivery after the restart", lambda: set(waiting) <= set(posted_incident_ids(slack))
                     and all(pagerduty.events_for(i) and firing(webhook, i) for i in waiting), timeout_s=40)
            time.sleep(1.5)
            posted = posted_incident_ids(slack)
            triggers = [e.dedup_key for e in pagerduty.triggers()]
            for incident_id in waiting:
                assert posted.count(incident_id) == 1, incident_id
                assert triggers.count(incident_id) == 1, incident_id
                assert len(firing(webhook, incident_id)) == 1, incident_id
            print(f"\nkill -9 with {len(waiting)} incident(s) queued; after restart: "
                  f"{[posted.count(i) for i in waiting]} Slack posts, {[triggers.count(i) for i in waiting]} "
                  f"PagerDuty triggers, {[len(firing(webhook, i)) for i in waiting]} webhook notifications each")
        finally:
            server.stop()


def test_kill9_after_slack_accepted_but_before_we_recorded_it(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        # Slack stores the message at once but answers only after 30 s: we die in between.
        slack.script(Step(method="chat.postMessage", error=None, delay_s=30.0, times=1))
        data = tmp_path / "data"
        server = Server(data, slack)
        try:
            Traffic().send(server.http_port, WARMUP_S + FAULT_S - 30)
            first = wait_for("the first post to reach Slack", lambda: posted_incident_ids(slack)
                             or [m for m in slack.channel_messages(CHANNEL)])
            time.sleep(0.3)
            server.kill9()
        finally:
            server.stop()
        messages = slack.channel_messages(CHANNEL)
        assert len(messages) == 1, messages
        incident_id = messages[0]["metadata"]["event_payload"]["incident_id"]
        slack.recover()
        server = Server(data, slack)
        try:
            # The restart finds the message by its metadata and updates it instead of posting again.
            wait_for("the adopted message to be updated", lambda: any(
                c.args.get("ts") == messages[0]["ts"] for c in slack.calls_to("chat.update")))
            time.sleep(1.0)
            top = [m for m in slack.channel_messages(CHANNEL)
                   if (m.get("metadata") or {}).get("event_payload", {}).get("incident_id") == incident_id]
            assert len(top) == 1
            assert first
        finally:
            server.stop()


def test_a_minute_of_rate_limits_loses_nothing_and_ingestion_goes_on(tmp_path: Path) -> None:
    # Slack, PagerDuty and the webhook rate limit for the same minute: one run covers all three.
    with FakeSlack() as slack, FakePagerDuty() as pagerduty, FakeWebhook() as webhook:
        slack.rate_limit(60.0, retry_after=5)
        pagerduty.rate_limit(60.0, retry_after=5)
        webhook.rate_limit(60.0, retry_after=5)
        limited_at = time.monotonic()
        settings = lifecycle_settings()
        settings.pagerduty.group_wait = settings.webhook.group_wait = 0.2
        settings.webhook.url = webhook.url
        creds = Credentials(**{**credentials(slack).__dict__, "pagerduty_routing_key": pagerduty.routing_key})
        settings.pagerduty.events_url = pagerduty.events_url
        app = App(settings, tmp_path / "data", console=False, credentials=creds)
        ports = app.start()
        try:
            traffic = Traffic()
            started = time.monotonic()
            traffic.send(ports.http, WARMUP_S + FAULT_S - 30)
            wait_for("incidents", lambda: [i for i in app.store.list() if i.type == "ERROR_RATE_SPIKE"])
            assert app.pipeline.drain(10)
            # The incident that leads its notification (a failing dependency's routes are listed on it).
            acked = max((i for i in app.store.list() if app.outbox.has_notification("slack", notification_key(i))),
                        key=rank)
            key = notification_key(acked)
            assert app.pipeline.incidents.acknowledge(acked.id, "U777", time.time_ns()) is not None
            # Ingestion while Slack refuses: every export request is accepted, promptly.
            sent_before = sum(v for v in _received(app))
            traffic.send(ports.http, 30)
            assert sum(v for v in _received(app)) > sent_before
            assert time.monotonic() - started < 55, "the rate limit should still be on"
            assert not posted_incident_ids(slack) and not pagerduty.accepted() and not webhook.payloads()
            wait_for("delivery after the rate limit", lambda: key in posted_incident_ids(slack), timeout_s=90)
            ids = {notification_key(i) for i in app.store.list()}
            outbox = Outbox(app.store)
            wait_for("an empty outbox", lambda: outbox.pending_count() == 0, timeout_s=60)
            posted = posted_incident_ids(slack)
            notified = [i for i in ids if outbox.notification("slack", i) is not None]
            assert notified and all(posted.count(i) == 1 for i in notified)
            # PagerDuty: one alert per notification, each event once, the acknowledgement included.
            paged = [i for i in ids if outbox.notification("pagerduty", i) is not None]
            assert sorted(paged) == sorted(notified)
            assert all([e.dedup_key for e in pagerduty.triggers()].count(i) == 1 for i in paged)
            # The acknowledgement is its own change through the policy: it may land after the
            # outbox was first seen empty.
            wait_for("PagerDuty's trigger and acknowledge", lambda: [e.action for e in pagerduty.events_for(key)]
                     == ["trigger", "acknowledge"], timeout_s=60, explain=lambda: (
                         f"acked {acked.id} under {key}; PagerDuty events "
                         f"{[(e.dedup_key, e.action) for e in pagerduty.accepted()]}; outbox {outbox.counts()}; "
                         f"incidents {[(i.id, i.type, i.status, i.problem_id, i.acknowledged_by) for i in app.store.list()]}"))
            # The webhook: every notification arrived, collapsed to its latest state. Its lead may
            # be another member of the problem (whoever led when its group_wait ended); the
            # acknowledgement covers the problem's open members.
            last = [p for p in webhook.payloads() if p["groupKey"] == f'{{}}:{{incident="{key}"}}'][-1]
            assert last["status"] == "firing" and last["alerts"][0]["annotations"]["acknowledged_by"] == "U777"
            ref = outbox.notification("slack", key).ref
            final = slack.messages[(ref["channel"], ref["ts"])]
            # Collapsed to the latest state: analysed and acknowledged in one message.
            assert "Acknowledged by <@U777>" in block_text(final)
            assert "Offline analysis" in block_text(final)
            notes = [m["text"] for m in slack.thread(ref["channel"], ref["ts"])]
            assert any("acknowledged by <@U777>" in n for n in notes)
            # The analysis is in the message (above); a lead that opened with its problem's
            # analysis already attached gets no separate "analysis ready" note in the thread.
            assert slack.calls_to("chat.postMessage")[0].status == 429
            limited = sum(c.status == 429 for c in slack.calls)
            pd_limited = sum(e.status == 429 for e in pagerduty.events)
            hook_limited = sum(c.status == 429 for c in webhook.calls)
            print(f"\nrate limit 60 s: Slack answered {limited} calls 429, PagerDuty {pd_limited}, the webhook "
                  f"{hook_limited}; afterwards {len(notified)} incident messages posted once each, "
                  f"{len(slack.calls_to('chat.update'))} updates, {len(notes)} notes on the acknowledged one; "
                  f"{len(pagerduty.triggers())} PagerDuty triggers for {len(paged)} notifications; "
                  f"{len(webhook.payloads())} webhook notifications; spans accepted while limited: "
                  f"{sum(_received(app)) - sent_before:.0f}; first post {_first_ok_post(slack) - limited_at:.1f} s "
                  f"after the limit began")
        finally:
            app.stop(grace_s=0)


def _received(app: App) -> list[float]:
    return [s.value for m in app.metrics.spans_received.collect() for s in m.samples if s.name.endswith("_total")]


def _first_ok_post(slack: FakeSlack) -> float:
    return min(c.at for c in slack.calls_to("chat.postMessage") if c.status == 200)
