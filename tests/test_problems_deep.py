"""One fault, one page, the root named first: each deep fault (3+ service hops below the
gateway's routes), two generator seeds, through the real pipeline (decode, windows, the
service graph, detectors, localisation, incidents, the notification policy, the outbox)
to the fake Slack over the real slack_sdk client.

Before the onset the deep topology's bursty background (notification-service fails
10-30 % in bursts) can raise an incident of its own; that is the noise model's concern
(issue 10's benign test), so what is judged here is everything opened from the onset on.
"""
from __future__ import annotations

import json
import time

import pytest

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.notify.cause import notification_key
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.harness import wait_for
from otel_ai.testing.scenarios import DEEP_SCENARIOS, deep_scenario

WARMUP_S = 600.0
AFTER_ONSET_S = 40.0
SEEDS = (1, 2)
NS = 1_000_000_000
CHANNEL = "#incidents"


def run(name: str, seed: int, slack: FakeSlack, data_dir) -> dict:
    settings = load_settings(env={"AI_MODE": "notify", "SLACK_INCIDENT_CHANNEL": CHANNEL})
    settings.slack.group_wait = 0.0
    app = App(settings, data_dir, console=False, use_wall_clock=False, credentials=Credentials(
        slack_bot_token="xoxb-test", slack_signing_secret=slack.signing_secret, slack_api_url=slack.url))
    generator = deep_scenario(name, seed=seed, warmup_s=WARMUP_S, rate_scale=0.5)
    try:
        for body in generator.serialized_batches(WARMUP_S + AFTER_ONSET_S):
            app.pipeline.feed(body)
        assert app.pipeline.flush(60)
        for delivery in app.deliveries.values():
            delivery.start()
        wait_for("an empty outbox", lambda: app.outbox.pending_count() == 0, timeout_s=60)
        incidents = app.store.list(limit=500)
        problems = {p.id: p for p in app.store.problems(limit=100)}
    finally:
        app.stop(grace_s=0)
    return {"generator": generator, "incidents": incidents, "problems": problems}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    started = time.monotonic()
    with FakeSlack() as slack:
        for name in DEEP_SCENARIOS:
            for seed in SEEDS:
                before = len(slack.calls)
                result = run(name, seed, slack, tmp_path_factory.mktemp(f"{name}-{seed}"))
                result["calls"] = slack.calls[before:]
                result["messages"] = dict(slack.messages)
                out[(name, seed)] = result
    print(f"\n{len(out)} deep runs through the pipeline and the fake Slack in {time.monotonic() - started:.0f} s")
    return out


def top_level_posts(calls) -> list:
    return [c for c in calls if c.method == "chat.postMessage" and c.status == 200 and not c.args.get("thread_ts")]


def matches(root: dict, truth: dict) -> bool:
    if truth["kind"] == "dependency":
        return root["kind"] == "dependency" and root["dependency"] == truth["dependency"]
    if truth["kind"] == "pod":
        return root["kind"] == "pod" and root["pod"] == truth["pod"]
    return root["kind"] == truth["kind"] and root["service"] == truth["service"]


def names_root(suspect: dict, truth: dict) -> bool:
    """Suspect #1 is the root: the pair that names it."""
    pair = (suspect["key"], suspect["value"])
    return {"dependency": pair in {("dependency.slow", truth["dependency"]), ("dependency.failed", truth["dependency"])},
            "pod": pair == ("k8s.pod.name", truth["pod"]),
            "network": pair == ("network.inbound", truth["service"]),
            "service": pair == ("service.name", truth["service"])}[truth["kind"]]


def text_of(message: dict) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", DEEP_SCENARIOS)
def test_one_problem_one_message_root_first(runs, name, seed):
    result = runs[(name, seed)]
    truth = result["generator"].ground_truth[0]
    onset_ns = truth.onset_ns
    after = [i for i in result["incidents"] if i.opened_at_ns >= onset_ns]
    assert after, (name, seed)
    # Exactly one problem for the fault: every incident it raised is in it.
    problem_ids = {i.problem_id for i in after}
    assert len(problem_ids) == 1 and None not in problem_ids, [(i.subject, i.problem_id) for i in after]
    problem = result["problems"][problem_ids.pop()]
    assert matches(problem.root_cause, truth.root_cause), (problem.root_cause, truth.root_cause)
    # The root is every member's root_cause and suspect #1.
    for incident in after:
        assert matches(incident.root_cause, truth.root_cause)
        assert names_root(incident.suspects[0], truth.root_cause), (incident.subject, incident.suspects[:2])
    # Detected within 30 s of the onset, in event time.
    assert min(i.opened_at_ns for i in after) - onset_ns <= 30 * NS
    # One top-level Slack message for it; none for anything else from the onset on.
    earlier_keys = {notification_key(i) for i in result["incidents"] if i.opened_at_ns < onset_ns}
    posts = [c for c in top_level_posts(result["calls"])
             if c.args["metadata"]["event_payload"]["incident_id"] not in earlier_keys]
    assert [p.args["metadata"]["event_payload"]["incident_id"] for p in posts] == [problem.id]
    # The message names the root, shows the chain, and lists the affected routes.
    message = result["messages"][(posts[0].response["channel"], posts[0].response["ts"])]
    text = text_of(message)
    assert "Root cause" in text and " → " in text
    root_name = truth.root_cause.get("pod") or truth.root_cause.get("dependency") or truth.root_cause["service"]
    assert root_name in text
    lead_id = next(e["value"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e.get("action_id") == "ack_incident")
    for member in problem.members:
        if member.id != lead_id and member.opened_at_ns >= onset_ns:
            assert member.subject.route in text or member.subject.service in text, member.subject
    print(f"{name} seed {seed}: {len(after)} incidents → 1 problem ({problem.root_key}), 1 message; "
          f"detected {(min(i.opened_at_ns for i in after) - onset_ns) / NS:.0f} s after onset; "
          f"{len(earlier_keys)} notification(s) before the onset")


def test_slow_leaf_names_the_dependency_first_and_the_running_version_below_it(runs):
    """Every incident of the slow leaf names it first. Where the window has too few good
    requests left, suspects compare with the past and the version that ran all day scores
    0 (tests/test_suspects.py has that case on its own); with good requests left, a version
    may keep a small within-window gap, always below the root."""
    for seed in SEEDS:
        result = runs[("slow_leaf", seed)]
        onset_ns = result["generator"].ground_truth[0].onset_ns
        leaf = result["generator"].ground_truth[0].root_cause["dependency"]
        after = [i for i in result["incidents"] if i.opened_at_ns >= onset_ns]
        assert after
        for incident in after:
            first = incident.suspects[0]
            assert (first["key"], first["value"], first["score"]) == ("dependency.slow", leaf, pytest.approx(
                incident.root_cause["score"])), incident.suspects[:3]
            versions = [s for s in incident.suspects if s["key"] == "service.version"]
            assert all(s["score"] < first["score"] for s in versions), versions
            if any(s.get("compared_with") == "before_onset" for s in incident.suspects):
                assert all(s["score"] == 0 for s in versions), versions
