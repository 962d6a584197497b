"""The incident's Slack message: seed layout, Slack's limits, escaping of telemetry, thread notes."""
from __future__ import annotations

import json
from typing import Any

import pytest

from otel_ai.analysis.offline import analyze_offline
from otel_ai.model import EVENT_TYPES
from otel_ai.notify.blocks import (
    SEVERITY_EMOJI,
    SlackMessage,
    details_link,
    render_incident,
    render_thread_note,
)
from otel_ai.testing.factory import FIXED_OPENED_AT_NS, IncidentFactory
from otel_ai.timefmt import NS_PER_S

MINUTE_NS = 60 * NS_PER_S


def claude_analysis(**overrides: Any) -> dict[str, Any]:
    analysis = {
        "summary": "checkout 2.0.0 dereferences a missing currency; roll back.",
        "enough_evidence": True,
        "hypotheses": [{"hypothesis": "bad deploy", "verdict": "supported", "evidence": ["95% vs 10%"]}],
        "root_causes": [
            {"cause": "Bad deploy of checkout 2.0.0", "probability": 85, "evidence": []},
            {"cause": "payments-api timeouts", "probability": 10, "evidence": []},
            {"cause": "Pod checkout-7f9c overloaded", "probability": 4.5, "evidence": []},
            {"cause": "Fourth cause nobody should see", "probability": 1, "evidence": []},
        ],
        "actions": ["Roll back checkout to 1.9.3", "Halt the 2.0.0 rollout", "Inspect exemplar traces",
                    "Fourth action nobody should see"],
        "rollback_needed": True,
        "rollback_reasoning": "2.0.0 carries 95% of failures and appeared 3 min before onset",
        "user_impact": "18% of checkouts fail",
        "confidence": 85,
        "source": "claude",
        "offline_reason": None,
        "model": "claude-sonnet-5-5",
        "cost_usd": 0.010712,
    }
    return {**analysis, **overrides}


def offline_analysis(incident, reason: str = "no_api_key") -> dict[str, Any]:
    return {**analyze_offline(incident, reason).model_dump(), "source": "offline", "offline_reason": reason,
            "model": None, "cost_usd": 0.0}


def snapshot_of(type: str = "ERROR_RATE_SPIKE", **overrides: Any) -> dict[str, Any]:
    return IncidentFactory.create_sample(type).snapshot() | overrides


def section_texts(message: SlackMessage) -> list[str]:
    """Every mrkdwn/plain text in the blocks, in order."""
    texts = []
    for block in message.blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [f["text"] for f in block.get("fields", [])]
        texts += [e["text"]["text"] if isinstance(e.get("text"), dict) else e["text"]
                  for e in block.get("elements", [])]
    return texts


def everything(message: SlackMessage) -> str:
    return "\n".join(section_texts(message) + [message.text])


def buttons(message: SlackMessage) -> list[dict]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def ack_buttons(message: SlackMessage) -> list[dict]:
    return [b for b in buttons(message) if b.get("action_id") == "ack_incident"]


def assert_within_slack_limits(message: SlackMessage) -> None:
    assert 0 < len(message.text) <= 3000
    assert 0 < len(message.blocks) <= 50
    for block in message.blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(0 < len(f["text"]) <= 2000 for f in block.get("fields", []))
        elif kind == "actions":
            assert 0 < len(block["elements"]) <= 25
            action_ids = [e["action_id"] for e in block["elements"]]
            assert len(action_ids) == len(set(action_ids))
            for button in block["elements"]:
                assert 0 < len(button["text"]["text"]) <= 75
                assert len(button.get("value", "")) <= 2000
                assert len(button.get("url", "")) <= 3000
        elif kind == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(0 < len(e["text"]) <= 3000 for e in block["elements"])
        else:
            assert kind == "divider"


# --------------------------------------------------------------------------- every type

@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_sample_renders_within_limits_with_its_buttons(event_type):
    incident = IncidentFactory.create_sample(event_type)
    incident.analysis = offline_analysis(incident)
    snapshot = incident.snapshot()
    message = render_incident(snapshot, details_url=f"https://otel-ai.example/incidents/{incident.id}",
                              related=[snapshot_of("CIRCUIT_BREAKER_CANDIDATE")], now_ns=FIXED_OPENED_AT_NS)

    assert_within_slack_limits(message)
    header = message.blocks[0]["text"]["text"]
    assert header.startswith(f"{SEVERITY_EMOJI[incident.severity]} {event_type.replace('_', ' ')}")
    assert buttons(message)[0]["url"] == f"https://otel-ai.example/incidents/{incident.id}"
    if incident.status == "open":
        [ack] = ack_buttons(message)
        assert ack["value"] == incident.id
        assert ack["style"] == "primary"
    else:
        assert incident.status == "resolved"  # RECOVERY_SIGNAL's sample
        assert ack_buttons(message) == []


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_sample_renders_without_analysis_as_pending(event_type):
    message = render_incident(snapshot_of(event_type))
    assert_within_slack_limits(message)
    assert {"type": "context", "elements": [{"type": "mrkdwn", "text": "🤖 Analysis pending…"}]} in message.blocks
    assert "AI Analysis" not in everything(message)


def test_summary_section_has_the_seed_fields():
    message = render_incident(snapshot_of("ERROR_RATE_SPIKE"))
    section = message.blocks[1]
    assert section["text"]["text"] == "*Error rate 18.4% on POST /api/checkout (threshold 2.5%, baseline 0.5%)*"
    fields = [f["text"] for f in section["fields"]]
    assert fields == [
        "*Service*\ncheckout POST /api/checkout",
        "*Severity*\n🚨 critical",
        "*Confidence*\n96%",
        "*Detected*\n<!date^1764000000^{date_short_pretty} {time}|2025-11-24T16:00:00Z>",
        "*Status*\nOpen",
    ]


def test_dependency_subject_is_named_as_a_dependency():
    message = render_incident(snapshot_of("CIRCUIT_BREAKER_CANDIDATE"))
    assert "*Service*\ndependency payments-api" in section_texts(message)
    assert "dependency payments-api" in message.text


def test_metrics_section_shows_value_threshold_baseline_breach_trend_window():
    message = render_incident(snapshot_of("LATENCY_ANOMALY"))
    [metrics] = [b for b in message.blocks if b.get("text", {}).get("text", "").startswith("*📊 Metrics:*")]
    assert metrics["text"]["text"] == "*📊 Metrics:* `latency_p95`"
    assert [f["text"] for f in metrics["fields"]] == [
        "*Current*\n2,400 ms (threshold 1,000 ms)", "*Baseline*\n210 ms", "*Breach*\n2.4x",
        "*Trend*\n↗ rising", "*Window*\n1m"]
    falling = render_incident(snapshot_of("RECOVERY_SIGNAL"))
    assert "*Trend*\n↘ falling" in section_texts(falling)


def test_top_suspects_show_shares_of_failing_and_healthy_requests():
    message = render_incident(snapshot_of("SECURITY_ANOMALY"))
    [suspects] = [t for t in section_texts(message) if t.startswith("*🔎 Top suspects:*")]
    lines = suspects.splitlines()
    assert lines[1] == "• `client.address=hash:5b1f0c2a9e7d` — 96% of failing vs 1% of healthy requests"
    assert len(lines) == 1 + 3


# --------------------------------------------------------------------------- analysis

def test_claude_analysis_shows_top_three_causes_and_actions_rollback_and_impact():
    message = render_incident(snapshot_of(analysis=claude_analysis()))
    [text] = [t for t in section_texts(message) if t.startswith("*🤖 AI Analysis (Claude):*")]
    assert "*Root Causes:*\n• Bad deploy of checkout 2.0.0 (85%)\n• payments-api timeouts (10%)\n" \
           "• Pod checkout-7f9c overloaded (4.5%)" in text
    assert "Fourth cause" not in text
    assert "*Recommended Actions:*\n• Roll back checkout to 1.9.3\n• Halt the 2.0.0 rollout\n" \
           "• Inspect exemplar traces" in text
    assert "Fourth action" not in text
    assert "*⚠️ Rollback Recommended:* 2.0.0 carries 95% of failures and appeared 3 min before onset" in text
    assert "*Impact:* 18% of checkouts fail" in text
    assert "🤖 Analysis pending…" not in everything(message)
    footer = message.blocks[-1]
    assert footer["type"] == "context"
    assert [e["text"] for e in footer["elements"]][-2:] == ["claude-sonnet-5-5", "$0.0107"]


def test_rollback_line_only_when_rollback_needed():
    message = render_incident(snapshot_of(analysis=claude_analysis(rollback_needed=False)))
    assert "Rollback Recommended" not in everything(message)
    assert "*Impact:*" in everything(message)


def test_no_causes_without_enough_evidence_says_so():
    message = render_incident(snapshot_of(analysis=claude_analysis(root_causes=[], enough_evidence=False)))
    assert "*Root Causes:* not enough evidence to single one out" in everything(message)


def test_offline_analysis_is_labelled_with_its_reason():
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
    incident.analysis = offline_analysis(incident, "budget_exhausted")
    message = render_incident(incident.snapshot())
    [text] = [t for t in section_texts(message) if "Offline analysis" in t]
    assert text.startswith("*🤖 Offline analysis* (budget_exhausted)\n")
    assert "Offline analysis (budget_exhausted):" not in text  # the label already says so
    assert "AI Analysis (Claude)" not in everything(message)
    assert "offline analysis" in [e["text"] for e in message.blocks[-1]["elements"]]


# --------------------------------------------------------------------------- status

def test_resolved_incident_has_suffix_duration_and_no_acknowledge_button():
    snapshot = IncidentFactory.create("ERROR_RATE_SPIKE", status="resolved", opened_at_ns=FIXED_OPENED_AT_NS,
                                      updated_at_ns=FIXED_OPENED_AT_NS + 14 * MINUTE_NS).snapshot()
    message = render_incident(snapshot, details_url="https://otel-ai.example/x")
    assert message.blocks[0]["text"]["text"] == "🚨 ERROR RATE SPIKE — RESOLVED"
    assert "*Status*\n✅ Resolved after 14 min" in section_texts(message)
    assert ack_buttons(message) == []
    assert [b["action_id"] for b in buttons(message)] == ["view_details"]
    assert message.text.endswith(" — RESOLVED")


def test_long_incidents_resolve_after_hours_and_minutes():
    snapshot = IncidentFactory.create("ERROR_RATE_SPIKE", status="resolved", opened_at_ns=FIXED_OPENED_AT_NS,
                                      updated_at_ns=FIXED_OPENED_AT_NS + 185 * MINUTE_NS).snapshot()
    assert "*Status*\n✅ Resolved after 3 h 5 min" in section_texts(render_incident(snapshot))


@pytest.mark.parametrize("who", ["U123", "<@U123>", "<@U123|alice>"])
def test_acknowledged_by_a_slack_user_is_a_mention(who):
    snapshot = snapshot_of(status="acknowledged", acknowledged_by=who)
    message = render_incident(snapshot)
    assert "*Status*\nAcknowledged by <@U123>" in section_texts(message)
    assert message.blocks[0]["text"]["text"].endswith(" — ACKNOWLEDGED")
    assert ack_buttons(message) == []


def test_acknowledged_by_a_name_is_escaped_text_not_a_mention():
    assert "*Status*\nAcknowledged by oncall" in section_texts(render_incident(
        snapshot_of(status="acknowledged", acknowledged_by="oncall")))
    hostile = render_incident(snapshot_of(status="acknowledged", acknowledged_by="<!channel>"))
    assert "*Status*\nAcknowledged by &lt;!channel&gt;" in section_texts(hostile)


def test_buttons_follow_details_url_and_ack_button_flag():
    snapshot = snapshot_of()
    assert not any(b["type"] == "actions" for b in render_incident(snapshot, ack_button=False).blocks)
    assert [b["action_id"] for b in buttons(render_incident(snapshot))] == ["ack_incident"]
    # A URL over Slack's limit cannot be cut without breaking it: the button is left out.
    too_long = render_incident(snapshot, details_url="https://x.example/" + "a" * 3000)
    assert [b["action_id"] for b in buttons(too_long)] == ["ack_incident"]


def test_footer_shows_id_and_update_time():
    snapshot = snapshot_of()
    footer = render_incident(snapshot, now_ns=FIXED_OPENED_AT_NS + 5 * MINUTE_NS).blocks[-1]
    texts = [e["text"] for e in footer["elements"]]
    assert texts[0] == f"`{snapshot['id']}`"
    assert texts[1] == "updated <!date^1764000300^{date_short_pretty} {time}|2025-11-24T16:05:00Z>"
    default = render_incident(snapshot).blocks[-1]["elements"][1]["text"]
    assert default.endswith("|2025-11-24T16:00:00Z>")  # the incident's own updated_at


# --------------------------------------------------------------------------- related

def test_related_incidents_list_five_and_count_the_rest():
    related = [snapshot_of(t) for t in EVENT_TYPES[:7]]
    [text] = [t for t in section_texts(render_incident(snapshot_of(), related=related)) if t.startswith("*Related:*")]
    lines = text.splitlines()
    assert len(lines) == 1 + 5 + 1
    assert lines[1].startswith("• ERROR RATE SPIKE checkout POST /api/checkout: Error rate 18.4%")
    assert lines[3].startswith("• CIRCUIT BREAKER CANDIDATE dependency payments-api: ")
    assert lines[-1] == "…and 2 more"


def test_no_related_section_without_related():
    assert not any(t.startswith("*Related:*") for t in section_texts(render_incident(snapshot_of(), related=[])))


# --------------------------------------------------------------------------- limits and escaping

def test_oversized_incident_still_renders_within_limits():
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
    incident.summary = "Error rate spike & more " * 420  # ~10 kB, with escapes to cut through
    incident.subject = incident.subject.__class__(incident.subject.kind, "s" * 500, "POST", "/r" * 2000)
    incident.suspects = [{"key": "k" * 200, "value": "v" * 200, "bad_share": 0.9, "good_share": 0.1}] * 20
    incident.data = {**incident.data, "metric": "m" * 5000, "window": "w" * 5000, "unit": "u" * 5000}
    incident.analysis = claude_analysis(
        summary="<s>" * 3000,
        root_causes=[{"cause": f"cause {i} " + "x" * 2000, "probability": 50, "evidence": []} for i in range(50)],
        actions=["a" * 5000] * 200, rollback_reasoning="r" * 9000, user_impact="i" * 9000,
        offline_reason="o" * 5000, model="m" * 5000)
    related = [snapshot_of(summary="y" * 10_000)] * 100
    message = render_incident(incident.snapshot(), related=related, details_url="https://x.example/y")

    assert_within_slack_limits(message)
    text = everything(message)
    assert "…" in message.blocks[1]["text"]["text"]
    assert text.count("cause ") == 3 + 1  # three in the analysis, the top one in the fallback
    assert "&am…" not in text and "&a…" not in text and "&…" not in text and "&l…" not in text
    assert len(message.text) <= 3000


def test_a_summary_cut_never_leaves_half_an_escape():
    for n in range(2990, 3005):
        text = render_incident(snapshot_of(summary="a" * n + "&&&&&&&&")).blocks[1]["text"]["text"]
        assert len(text) <= 3000
        assert not text.rstrip("…*").endswith(("&", "&a", "&am", "&amp"))


HOSTILE = ["<!channel>", "<!here>", "<https://evil.example|click>", "<@U999>"]


def test_telemetry_cannot_mention_or_link():
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
    incident.subject = incident.subject.__class__(incident.subject.kind, "checkout<!here>", "POST",
                                                  "/api/<!channel>")
    incident.summary = "Error rate on /api/<!channel> <https://evil.example|click>"
    incident.suspects = [{"key": "tenant.id", "value": "<!channel>", "bad_share": 0.9, "good_share": 0.1},
                         {"key": "url.full", "value": "<https://evil.example|click>`<@U999>",
                          "bad_share": 0.8, "good_share": 0.1}]
    incident.data = {**incident.data, "metric": "<!channel>", "trend": "<!here>"}
    incident.context = {**incident.context, "resolution": "<!channel>"}
    incident.analysis = claude_analysis(
        summary="<!channel> look", user_impact="<!here>", rollback_reasoning="<https://evil.example|click>",
        root_causes=[{"cause": "tenant <!channel>", "probability": 90, "evidence": []}],
        actions=["visit <https://evil.example|click>"], model="<!channel>")
    related = [snapshot_of(route="/x/<!channel>", summary="<!here>")]
    snapshot = incident.snapshot()
    message = render_incident(snapshot, related=related)

    rendered = everything(message) + "".join(
        render_thread_note(change, snapshot) for change in ("analyzed", "resolved", "updated", "opened", "<!here>"))
    for hostile in HOSTILE:
        assert hostile not in rendered
    assert "/api/&lt;!channel&gt;" in message.text
    assert "• `tenant.id=&lt;!channel&gt;`" in everything(message)
    assert "<!date^" in rendered  # our own date tokens stay live


def test_newlines_in_telemetry_cannot_fake_lines():
    message = render_incident(snapshot_of(route="/api\n*Status*\nResolved", summary="a\nb"))
    assert "*Service*\ncheckout POST /api *Status* Resolved" in section_texts(message)
    assert message.blocks[1]["text"]["text"] == "*a b*"


@pytest.mark.parametrize("snapshot", [
    {},
    {"id": "inc_1", "status": "open", "data": None, "context": [], "suspects": "junk", "confidence": "high",
     "opened_at": "not a time", "analysis": {"root_causes": "junk", "actions": None, "cost_usd": "1"}},
])
def test_malformed_snapshots_still_render(snapshot):
    message = render_incident(snapshot, related=[{}, "junk"])  # type: ignore[list-item]
    assert_within_slack_limits(message)
    assert message.text == message.text.strip()
    for change in ("opened", "analyzed", "acknowledged", "resolved", "reopened", "updated"):
        assert render_thread_note(change, snapshot)
    assert details_link("https://x.example/{trace_id}", snapshot) is None


# --------------------------------------------------------------------------- fallback text

def test_fallback_text_names_type_route_summary_and_top_cause():
    plain = render_incident(snapshot_of()).text
    assert plain == ("🚨 ERROR RATE SPIKE checkout POST /api/checkout: "
                     "Error rate 18.4% on POST /api/checkout (threshold 2.5%, baseline 0.5%)")
    analysed = render_incident(snapshot_of(analysis=claude_analysis())).text
    assert analysed == plain + " — top cause: Bad deploy of checkout 2.0.0 (85%)"
    acked = render_incident(snapshot_of(status="acknowledged", acknowledged_by="U1")).text
    assert acked == plain + " — ACKNOWLEDGED"


def test_fallback_text_is_short_even_for_huge_incidents():
    snapshot = snapshot_of(summary="z" * 10_000, route="/" + "r" * 10_000,
                           analysis=claude_analysis(root_causes=[{"cause": "c" * 10_000, "probability": 99}]),
                           status="resolved")
    text = render_incident(snapshot).text
    assert len(text) <= 3000
    assert text.endswith(" — RESOLVED")
    assert "top cause: ccc" in text


# --------------------------------------------------------------------------- determinism

def test_rendering_is_deterministic_and_survives_a_json_round_trip():
    incident = IncidentFactory.create_sample("RETRY_STORM")
    incident.analysis = offline_analysis(incident)
    snapshot = incident.snapshot()
    kwargs = {"details_url": "https://x.example/1", "related": [snapshot_of()], "now_ns": FIXED_OPENED_AT_NS}
    first = render_incident(snapshot, **kwargs)
    assert render_incident(snapshot, **kwargs) == first
    assert render_incident(json.loads(json.dumps(snapshot)), **kwargs) == first
    assert json.loads(json.dumps(first.blocks)) == first.blocks  # plain JSON for chat.update


def test_rendering_does_not_modify_the_snapshot():
    snapshot = snapshot_of(analysis=claude_analysis())
    before = json.dumps(snapshot, sort_keys=True)
    render_incident(snapshot, related=[snapshot_of()])
    assert json.dumps(snapshot, sort_keys=True) == before


# --------------------------------------------------------------------------- details_link

def test_details_link_fills_and_quotes_the_fields():
    snapshot = snapshot_of("LATENCY_ANOMALY")
    url = details_link("https://grafana.example/d/x?incident={incident_id}&service={service}&route={route}", snapshot)
    assert url == (f"https://grafana.example/d/x?incident={snapshot['id']}&service=orders"
                   "&route=%2Fapi%2Forders%2F%7Bid%7D")


def test_details_link_uses_the_first_exemplar_trace():
    snapshot = snapshot_of("LATENCY_ANOMALY")
    first = snapshot["context"]["exemplar_trace_ids"][0]
    assert details_link("https://tempo.example/trace/{trace_id}", snapshot) == f"https://tempo.example/trace/{first}"


def test_details_link_without_exemplars_or_template():
    snapshot = snapshot_of("COST_ALERT")  # no exemplar traces
    assert details_link("https://tempo.example/trace/{trace_id}", snapshot) is None
    assert details_link("https://otel-ai.example/i/{incident_id}", snapshot) == \
        f"https://otel-ai.example/i/{snapshot['id']}"
    assert details_link(None, snapshot) is None


def test_details_link_quotes_hostile_values_and_leaves_other_text():
    snapshot = snapshot_of(service="a b&c", route="/x?y=<z>#f")
    assert details_link("https://x.example/{service}/{route}/{other}", snapshot) == \
        "https://x.example/a%20b%26c/%2Fx%3Fy%3D%3Cz%3E%23f/{other}"


# --------------------------------------------------------------------------- thread notes

def test_thread_note_acknowledged_uses_the_seed_wording():
    snapshot = snapshot_of(status="acknowledged", acknowledged_by="oncall")
    assert render_thread_note("acknowledged", snapshot, user="U123") == "✅ Incident acknowledged by <@U123>"
    assert render_thread_note("acknowledged", snapshot) == "✅ Incident acknowledged by oncall"
    assert render_thread_note("acknowledged", snapshot, user="<!channel>") == \
        "✅ Incident acknowledged by &lt;!channel&gt;"


def test_thread_note_analyzed_names_model_and_cost_or_offline_reason():
    assert render_thread_note("analyzed", snapshot_of(analysis=claude_analysis())) == \
        "🤖 Analysis ready (claude-sonnet-5-5, $0.0107)"
    offline = claude_analysis(source="offline", offline_reason="no_api_key", model=None, cost_usd=0.0)
    assert render_thread_note("analyzed", snapshot_of(analysis=offline)) == "🤖 Offline analysis (no_api_key)"


def test_thread_note_resolved_reopened_updated():
    resolved = IncidentFactory.create("ERROR_RATE_SPIKE", status="resolved", opened_at_ns=FIXED_OPENED_AT_NS,
                                      updated_at_ns=FIXED_OPENED_AT_NS + 14 * MINUTE_NS,
                                      context={"resolution": "recovered"}).snapshot()
    assert render_thread_note("resolved", resolved) == "✅ Resolved after 14 min (recovered)"
    assert render_thread_note("reopened", snapshot_of()) == "🔁 Reopened"

    now = IncidentFactory.create("ERROR_RATE_SPIKE", data={"current_value": 35.0}).snapshot()
    before = IncidentFactory.create("ERROR_RATE_SPIKE", data={"current_value": 12.0}).snapshot()
    assert render_thread_note("updated", now, previous=before) == "📈 Updated: error_rate 35.0% (was 12.0%)"
    assert render_thread_note("updated", before, previous=now) == "📉 Updated: error_rate 12.0% (was 35.0%)"
    assert render_thread_note("updated", now) == "📈 Updated: error_rate 35.0%"


def test_thread_notes_stay_one_short_line():
    snapshot = snapshot_of(summary="s\n" * 5000, analysis=claude_analysis(model="m\n" * 5000))
    for change in ("opened", "analyzed", "acknowledged", "resolved", "reopened", "updated", "x\n" * 900):
        note = render_thread_note(change, snapshot, user="u\n" * 900)
        assert 0 < len(note) <= 500
        assert "\n" not in note
