"""An incident's one Slack message, as Block Kit, and the one-line notes of its thread.

Each incident is posted once and then updated in place (chat.update) as it changes:
when the analysis arrives, when someone acknowledges it, when it resolves. So the
message is always rendered whole from the incident's current snapshot, in the layout
of the seed playbook's Slack notifier (header, summary, AI analysis, metrics, buttons),
and every change gets a short note in the message's thread.

Rendering must never fail and never be refused by Slack, whatever the incident holds:
every text is cut to Slack's limits with "…". Telemetry strings (routes, attribute
values, error messages, and the analysis that quotes them) are untrusted, so `&`, `<`
and `>` are escaped everywhere: otherwise a span could carry "<!channel>" and page a
whole workspace, or plant a disguised link. Only the mentions, dates and links this
module writes itself use Slack's <…> syntax.

Pure functions: no I/O and no clock (the caller passes `now_ns`), so the same snapshot
always renders to the same message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from otel_ai.analysis.render import percent
from otel_ai.model import DEPENDENCY
from otel_ai.problems import root_title
from otel_ai.timefmt import NS_PER_S, parse_rfc3339, rfc3339

SEVERITY_EMOJI = {"critical": "🚨", "warning": "⚠️", "info": "ℹ️"}
UNKNOWN_SEVERITY_EMOJI = "❓"
ACK_ACTION_ID = "ack_incident"
VIEW_DETAILS_ACTION_ID = "view_details"

# Slack's limits (https://api.slack.com/reference/block-kit).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
# Slack accepts 40k characters of fallback text, but it is what phones show in a
# notification: keep it short.
MAX_FALLBACK_TEXT = 3000

TOP_CAUSES = 3
TOP_ACTIONS = 3
TOP_SUSPECTS = 3
MAX_RELATED = 5
MAX_AFFECTED = 10  # a problem's member incidents listed on its message
MAX_HOPS = 8  # the root cause's chain, from the anomalous subject down

# Per-item budgets, chosen so that a full section stays under MAX_SECTION_TEXT and one
# long item cannot crowd out the others.
SUMMARY_CHARS = 400
CAUSE_CHARS = 250
ACTION_CHARS = 250
REASONING_CHARS = 400
SUSPECT_VALUE_CHARS = 100
RELATED_LINE_CHARS = 300
FALLBACK_SUMMARY_CHARS = 300
FALLBACK_CAUSE_CHARS = 150
NOTE_CHARS = 500
WHERE_CHARS = 300

STATUS_SUFFIX = {"resolved": " — RESOLVED", "acknowledged": " — ACKNOWLEDGED"}
TREND_ARROW = {"rising": "↗", "falling": "↘", "stable": "→"}

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
# After a cut: an escape (&amp; &lt; &gt;) missing its end, or one of our <…> tokens
# missing its '>' (untrusted text has no raw '<', so any '<' is ours).
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_UNCLOSED_TOKEN = re.compile(r"<[^>]*$")
# Slack user ids: U or W, then upper-case letters and digits (always some digits).
_USER_ID = re.compile(r"[UW](?=[A-Z0-9]*[0-9])[A-Z0-9]{2,}")
_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>")
_LINK_FIELDS = re.compile(r"\{(incident_id|trace_id|service|route)\}")


@dataclass(frozen=True)
class SlackMessage:
    text: str  # fallback text for notifications and clients without blocks (<= 3000 chars)
    blocks: list[dict]


# --------------------------------------------------------------------------- text helpers

def escape(value: Any) -> str:
    """Slack mrkdwn escaping: untrusted text can then neither mention nor link."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut mrkdwn to `limit` characters with "…", never leaving half an escape or token."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    cut = _PARTIAL_ENTITY.sub("", _UNCLOSED_TOKEN.sub("", cut))
    return cut + "…"


def _clip_plain(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _one_line(value: Any) -> str:
    """Newlines and control characters in telemetry would fake extra lines of the message."""
    return _CONTROL_CHARS.sub(" ", "" if value is None else str(value)).strip()


def _untrusted(value: Any, limit: int) -> str:
    return clip(escape(_one_line(value)), limit)


def _code(value: Any, limit: int) -> str:
    # A backtick in the value would close the code span early.
    return "`" + _untrusted(str(value).replace("`", "'"), limit) + "`"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _time_ns(timestamp: Any) -> int | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return parse_rfc3339(timestamp)
    except ValueError:
        return None


def _slack_date(ns: int | None) -> str | None:
    """Shown in each reader's own time zone; the RFC 3339 text is the fallback."""
    if ns is None:
        return None
    return f"<!date^{ns // NS_PER_S}^{{date_short_pretty}} {{time}}|{rfc3339(ns)}>"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(int(seconds), 0)} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _amount(value: Any, unit: str) -> str | None:
    """A metric value for humans, like the console exporter: '18.4%', '2,400 ms', '$4.9915'."""
    if not _is_number(value):
        return None
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "USD":
        return f"${value:.2f}" if round(value, 2) == value else f"${value:.4f}"
    if unit == "x":
        return f"{value:g}x"
    return f"{value:g} {escape(_one_line(unit))}".strip()


def _share(value: Any) -> str | None:
    return f"{value * 100:.0f}%" if _is_number(value) else None


# --------------------------------------------------------------------------- snapshot readers

def _emoji(snapshot: dict) -> str:
    return SEVERITY_EMOJI.get(str(snapshot.get("severity")), UNKNOWN_SEVERITY_EMOJI)


def _type_title(snapshot: dict) -> str:
    # As the seed's header: ERROR_RATE_SPIKE -> "ERROR RATE SPIKE".
    return _one_line(snapshot.get("type") or "INCIDENT").replace("_", " ")


def _where(subject: dict) -> str:
    """'checkout POST /api/checkout', 'dependency payments-api' or 'otel-ai ai-budget', escaped."""
    service = _one_line(subject.get("service"))
    if subject.get("subject_kind") == DEPENDENCY:
        return clip(escape(f"dependency {service}"), WHERE_CHARS)
    parts = [service, _one_line(subject.get("method")), _one_line(subject.get("route"))]
    return clip(escape(" ".join(p for p in parts if p)), WHERE_CHARS)


def _mention(who: Any) -> str:
    """A Slack user id as a mention; any other name as (escaped) text."""
    text = _one_line(who)
    mention = _MENTION.fullmatch(text)
    if mention:
        return f"<@{mention.group(1)}>"
    if _USER_ID.fullmatch(text):
        return f"<@{text}>"
    return _untrusted(text, 100)


def _resolved_after(snapshot: dict) -> str | None:
    opened, resolved = _time_ns(snapshot.get("opened_at")), _time_ns(snapshot.get("resolved_at"))
    if opened is None or resolved is None:
        return None
    return _duration((resolved - opened) / NS_PER_S)


def _recovering(snapshot: dict) -> str | None:
    """While recovery is verified (the "recovering" change): back below threshold, not yet resolved."""
    recovery = _dict(_dict(snapshot.get("context")).get("recovery"))
    if not recovery:
        return None
    verify_for = recovery.get("verify_for_s")
    return f"🩹 Recovering, verifying for {_duration(verify_for)}" if _is_number(verify_for) else "🩹 Recovering"


def _status_text(snapshot: dict) -> str:
    status = snapshot.get("status")
    if status == "resolved":
        after = _resolved_after(snapshot)
        return f"✅ Resolved after {after}" if after else "✅ Resolved"
    recovering = _recovering(snapshot)
    if status == "acknowledged":
        who = snapshot.get("acknowledged_by")
        text = f"Acknowledged by {_mention(who)}" if who else "Acknowledged"
        return f"{text} · {recovering}" if recovering else text
    if recovering:
        return recovering
    reopened = snapshot.get("reopen_count")
    if _is_number(reopened) and reopened > 0:
        return f"Open (reopened {reopened}×)"
    return "Open" if status in (None, "open") else _untrusted(status, 50).capitalize()


def _top_cause(analysis: dict) -> str | None:
    causes = [c for c in _list(analysis.get("root_causes")) if isinstance(c, dict) and c.get("cause")]
    if not causes:
        return None
    return f"{_untrusted(causes[0]['cause'], FALLBACK_CAUSE_CHARS)} ({percent(causes[0].get('probability'))})"


def _is_offline(analysis: dict) -> bool:
    return analysis.get("source") == "offline"


def _cost(analysis: dict) -> str | None:
    cost = analysis.get("cost_usd")
    return f"${cost:.4f}" if _is_number(cost) else None


# --------------------------------------------------------------------------- block builders

def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip_plain(text, MAX_HEADER_TEXT), "emoji": True}}


def _section(text: str = "", fields: list[str] | None = None) -> dict:
    block: dict[str, Any] = {"type": "section"}
    if text:
        block["text"] = _mrkdwn(clip(text, MAX_SECTION_TEXT))
    if fields:
        block["fields"] = [_mrkdwn(clip(f, MAX_FIELD_TEXT)) for f in fields[:MAX_FIELDS]]
    return block


def _field(label: str, value: str) -> str:
    return f"*{label}*\n{value}"


def _context(texts: list[str]) -> dict:
    return {"type": "context",
            "elements": [_mrkdwn(clip(t, MAX_SECTION_TEXT)) for t in texts[:MAX_CONTEXT_ELEMENTS]]}


def _button(text: str, **extra: str) -> dict:
    return {"type": "button", "text": {"type": "plain_text", "text": _clip_plain(text, MAX_BUTTON_TEXT), "emoji": True},
            **extra}


# --------------------------------------------------------------------------- message parts

def _title_block(snapshot: dict) -> dict:
    suffix = STATUS_SUFFIX.get(str(snapshot.get("status")), "")
    title = _clip_plain(f"{_emoji(snapshot)} {_type_title(snapshot)}", MAX_HEADER_TEXT - len(suffix))
    return _header(title + suffix)


def _summary_block(snapshot: dict) -> dict:
    summary = snapshot.get("summary")
    text = f"*{_untrusted(summary, MAX_SECTION_TEXT - 2)}*" if summary else ""
    fields = [_field("Service", _where(snapshot) or "?"),
              _field("Severity", f"{_emoji(snapshot)} {_untrusted(snapshot.get('severity') or '?', 50)}")]
    confidence = snapshot.get("confidence")
    if _is_number(confidence):
        fields.append(_field("Confidence", f"{round(confidence * 100)}%"))
    detected = _slack_date(_time_ns(snapshot.get("opened_at")))
    if detected:
        fields.append(_field("Detected", detected))
    fields.append(_field("Status", _status_text(snapshot)))
    return _section(text, fields)


def _analysis_label(analysis: dict) -> str:
    if _is_offline(analysis):
        reason = analysis.get("offline_reason")
        return "*🤖 Offline analysis*" + (f" ({_untrusted(reason, 200)})" if reason else "")
    return "*🤖 AI Analysis (Claude):*"


def _analysis_summary(analysis: dict) -> str:
    summary = _one_line(analysis.get("summary"))
    # The offline analyzer starts its summary with what the label already says.
    prefix = f"Offline analysis ({_one_line(analysis.get('offline_reason'))}): "
    if _is_offline(analysis) and summary.startswith(prefix):
        summary = summary[len(prefix):]
    return summary


def _cause_line(cause: Any) -> str:
    # The seed's formatAnalysis also takes plain strings as causes.
    if isinstance(cause, dict):
        return f"• {_untrusted(cause.get('cause') or '?', CAUSE_CHARS)} ({percent(cause.get('probability'))})"
    return f"• {_untrusted(cause, CAUSE_CHARS)}"


def _analysis_text(analysis: dict) -> str:
    """The seed's formatAnalysis: top causes, top actions, rollback, impact."""
    lines = [_analysis_label(analysis)]
    summary = _analysis_summary(analysis)
    if summary:
        lines.append(_untrusted(summary, SUMMARY_CHARS))
    causes = _list(analysis.get("root_causes"))
    if causes:
        lines += ["", "*Root Causes:*", *(_cause_line(c) for c in causes[:TOP_CAUSES])]
    elif analysis.get("enough_evidence") is False:
        lines += ["", "*Root Causes:* not enough evidence to single one out"]
    actions = _list(analysis.get("actions"))
    if actions:
        lines += ["", "*Recommended Actions:*", *(f"• {_untrusted(a, ACTION_CHARS)}" for a in actions[:TOP_ACTIONS])]
    if analysis.get("rollback_needed"):
        lines += ["", f"*⚠️ Rollback Recommended:* {_untrusted(analysis.get('rollback_reasoning') or '', REASONING_CHARS)}"]
    if analysis.get("user_impact"):
        lines += ["", f"*Impact:* {_untrusted(analysis['user_impact'], REASONING_CHARS)}"]
    return "\n".join(lines)


def _analysis_blocks(snapshot: dict) -> list[dict]:
    analysis = snapshot.get("analysis")
    if not isinstance(analysis, dict):
        return [_context(["🤖 Analysis pending…"])]
    return [_section(_analysis_text(analysis))]


def _metric_fields(data: dict, resolved: bool = False) -> list[str]:
    unit = str(data.get("unit") or "")
    fields = []
    current = _amount(data.get("current_value"), unit)
    threshold = _amount(data.get("threshold"), unit)
    peak = _amount(data.get("peak_value"), unit)
    if resolved and peak:
        # A resolved incident is told by its worst and its last value, not by its last breach.
        fields.append(_field("Peak", f"{peak} (threshold {threshold})" if threshold else peak))
        fields.append(_field("At recovery", _amount(data.get("recovery_value"), unit) or "no traffic"))
    elif current:
        fields.append(_field("Current", f"{current} (threshold {threshold})" if threshold else current))
    elif threshold:
        fields.append(_field("Threshold", threshold))
    baseline = _amount(data.get("baseline_value"), unit)
    if baseline:
        fields.append(_field("Baseline", baseline))
    if _is_number(data.get("breach_ratio")):
        fields.append(_field("Breach", f"{data['breach_ratio']:.1f}x"))
    trend = data.get("trend")
    if trend:
        arrow = TREND_ARROW.get(str(trend), "")
        fields.append(_field("Trend", f"{arrow} {_untrusted(trend, 50)}".strip()))
    if data.get("window"):
        fields.append(_field("Window", _untrusted(data["window"], 50)))
    return fields


def _metrics_blocks(snapshot: dict) -> list[dict]:
    data = _dict(snapshot.get("data"))
    fields = _metric_fields(data, resolved=snapshot.get("status") == "resolved")
    if not fields:
        return []
    metric = data.get("metric")
    title = f"*📊 Metrics:* {_code(metric, 100)}" if metric else "*📊 Metrics:*"
    return [_section(title, fields)]


def _suspect_line(suspect: dict) -> str:
    pair = _code(f"{_one_line(suspect.get('key') or '?')}={_one_line(suspect.get('value'))}",
                 SUSPECT_VALUE_CHARS)
    bad, good = _share(suspect.get("bad_share")), _share(suspect.get("good_share"))
    if bad and good:
        return f"• {pair} — {bad} of failing vs {good} of healthy requests"
    return f"• {pair}"


def _suspects_blocks(snapshot: dict) -> list[dict]:
    suspects = [s for s in _list(snapshot.get("suspects")) if isinstance(s, dict)][:TOP_SUSPECTS]
    if not suspects:
        return []
    return [_section("\n".join(["*🔎 Top suspects:*", *(_suspect_line(s) for s in suspects)]))]


def _hop_line(hop: dict) -> str:
    before, now = hop.get("baseline"), hop.get("now")
    line = f"• {_untrusted(hop.get('component'), WHERE_CHARS)}: {escape(_one_line(hop.get('metric')))} "
    line += f"{before if before is not None else '?'} → *{now if now is not None else '?'}*"
    calls = hop.get("calls_per_request")
    if _is_number(calls) and calls != 1:
        line += f" (×{calls:g} per request)"
    share = hop.get("share_of_excess")
    if _is_number(share):
        line += f" ({share * 100:.0f}% of the excess)"
    return line


def _root_cause_blocks(snapshot: dict, related: list[dict] | None) -> list[dict]:
    """The localised root and the chain to it, hop by hop, baseline → now: the longest chain
    among the problem's incidents, so it reads from the highest affected route down."""
    root = snapshot.get("root_cause")
    if not isinstance(root, dict) or not root.get("kind"):
        return []
    chains = [_list(root.get("evidence"))] + [
        _list(r["root_cause"].get("evidence")) for r in related or []
        if isinstance(r, dict) and isinstance(r.get("root_cause"), dict) and r.get("problem_id")
        and r.get("problem_id") == snapshot.get("problem_id")]
    root = {**root, "evidence": max(chains, key=len)}
    title = f"*🎯 Root cause: {_untrusted(root_title(root), WHERE_CHARS)}*"
    if _is_number(root.get("score")):
        title += f" — explains {root['score'] * 100:.0f}% of the change"
    hops = [h for h in _list(root.get("evidence")) if isinstance(h, dict)]
    lines = [title, *(_hop_line(h) for h in hops[:MAX_HOPS])]
    if len(hops) > MAX_HOPS:
        lines.append(f"…and {len(hops) - MAX_HOPS} more hops")
    return [_section(clip("\n".join(lines), MAX_SECTION_TEXT))]


def _related_line(other: dict) -> str:
    line = f"{_type_title(other)} {_where(other)}"
    if other.get("summary"):
        line += f": {escape(_one_line(other['summary']))}"
    return "• " + clip(line, RELATED_LINE_CHARS)


def _related_blocks(related: list[dict] | None, problem: bool = False) -> list[dict]:
    """Other incidents on this message: a problem's are the routes and dependencies it affects."""
    others = [r for r in related or [] if isinstance(r, dict)]
    if not others:
        return []
    listed = MAX_AFFECTED if problem else MAX_RELATED
    lines = ["*Also affected:*" if problem else "*Related:*", *(_related_line(r) for r in others[:listed])]
    if len(others) > listed:
        lines.append(f"…and {len(others) - listed} more")
    return [_section("\n".join(lines))]


def _actions_blocks(snapshot: dict, details_url: str | None, ack_button: bool) -> list[dict]:
    buttons = []
    # A cut URL would lead somewhere wrong: better no button than a broken one.
    if details_url and len(details_url) <= MAX_URL:
        buttons.append(_button("🔍 View Details", action_id=VIEW_DETAILS_ACTION_ID, url=details_url))
    incident_id = str(snapshot.get("id") or "")
    if ack_button and snapshot.get("status") == "open" and incident_id:
        buttons.append(_button("✅ Acknowledge", style="primary", action_id=ACK_ACTION_ID,
                               value=incident_id[:MAX_BUTTON_VALUE]))
    return [{"type": "actions", "elements": buttons}] if buttons else []


def _footer_block(snapshot: dict, now_ns: int | None) -> dict:
    texts = [_code(snapshot.get("id") or "?", 100)]
    if snapshot.get("problem_id"):
        texts.append("problem " + _code(snapshot["problem_id"], 100))
    updated = _slack_date(now_ns if now_ns is not None else _time_ns(snapshot.get("updated_at")))
    if updated:
        texts.append(f"updated {updated}")
    analysis = snapshot.get("analysis")
    if isinstance(analysis, dict):
        if _is_offline(analysis):
            texts.append("offline analysis")
        else:
            texts += [t for t in (_untrusted(analysis.get("model") or "", 100), _cost(analysis)) if t]
    return _context(texts)


def _fallback_text(snapshot: dict) -> str:
    text = " ".join(p for p in (_emoji(snapshot), _type_title(snapshot), _where(snapshot)) if p)
    if snapshot.get("summary"):
        text += f": {_untrusted(snapshot['summary'], FALLBACK_SUMMARY_CHARS)}"
    analysis = snapshot.get("analysis")
    top = _top_cause(analysis) if isinstance(analysis, dict) else None
    if top:
        text += f" — top cause: {top}"
    suffix = STATUS_SUFFIX.get(str(snapshot.get("status")), "")
    return clip(text, MAX_FALLBACK_TEXT - len(suffix)) + suffix


# --------------------------------------------------------------------------- public API

def render_incident(snapshot: dict, *, details_url: str | None = None, related: list[dict] | None = None,
                    now_ns: int | None = None, ack_button: bool = True) -> SlackMessage:
    """The one message of an incident, for its current state.

    `snapshot` is Incident.snapshot(); `details_url` adds a "View Details" button;
    `related` (other incidents, as snapshots or the policy's related lines) adds
    a Related section; `now_ns` is when the message is (re)rendered, shown as "updated",
    defaulting to the incident's updated_at; `ack_button=False` leaves out Acknowledge
    (e.g. when no Slack signing secret is configured to receive the click).
    """
    blocks = [
        _title_block(snapshot),
        _summary_block(snapshot),
        {"type": "divider"},
        *_analysis_blocks(snapshot),
        *_root_cause_blocks(snapshot, related),
        *_metrics_blocks(snapshot),
        *_suspects_blocks(snapshot),
        *_related_blocks(related, problem=bool(snapshot.get("problem_id"))),
        *_actions_blocks(snapshot, details_url, ack_button),
        _footer_block(snapshot, now_ns),
    ]
    return SlackMessage(text=_fallback_text(snapshot), blocks=blocks[:MAX_BLOCKS])


def _analyzed_note(snapshot: dict) -> str:
    analysis = _dict(snapshot.get("analysis"))
    if _is_offline(analysis):
        reason = analysis.get("offline_reason")
        return "🤖 Offline analysis" + (f" ({_untrusted(reason, 200)})" if reason else "")
    details = [t for t in (_untrusted(analysis.get("model") or "", 100), _cost(analysis)) if t]
    return "🤖 Analysis ready" + (f" ({', '.join(details)})" if details else "")


def _resolved_note(snapshot: dict) -> str:
    after = _resolved_after(snapshot)
    text = f"✅ Resolved after {after}" if after else "✅ Resolved"
    resolution = _dict(snapshot.get("context")).get("resolution")
    return text + (f" ({_untrusted(resolution, 100)})" if resolution else "")


def _updated_note(snapshot: dict, previous: dict | None) -> str:
    data = _dict(snapshot.get("data"))
    unit = str(data.get("unit") or "")
    current = _amount(data.get("current_value"), unit)
    if not current:
        return "📈 Updated"
    before = _dict(_dict(previous).get("data")).get("current_value")
    fell = _is_number(before) and before > data["current_value"]
    text = f"{'📉' if fell else '📈'} Updated: {_untrusted(data.get('metric') or 'value', 100)} {current}"
    was = _amount(before, unit)
    return text + (f" (was {was})" if was else "")


def render_thread_note(change: str, snapshot: dict, *, user: str | None = None,
                       previous: dict | None = None) -> str:
    """One line for the incident's thread, in mrkdwn, for `change` (the snapshot's last change).

    "✅ Incident acknowledged by <@U123>" (the seed's wording; `user` is whoever clicked,
    else the snapshot's acknowledged_by), "🤖 Analysis ready (claude-sonnet-5-5, $0.0107)" /
    "🤖 Offline analysis (no_api_key)", "✅ Resolved after 14 min (recovered)", "🔁 Reopened",
    "📈 Updated: error_rate 35.0% (was 12.0%)" (the "was" part needs `previous`, the snapshot
    the message showed before this change).
    """
    if change == "acknowledged":
        who = user or snapshot.get("acknowledged_by")
        text = f"✅ Incident acknowledged by {_mention(who)}" if who else "✅ Incident acknowledged"
    elif change == "analyzed":
        text = _analyzed_note(snapshot)
    elif change == "resolved":
        text = _resolved_note(snapshot)
    elif change == "reopened":
        text = "🔁 Reopened"
    elif change == "updated":
        text = _updated_note(snapshot, previous)
    elif change == "opened":
        summary = _untrusted(snapshot.get("summary") or "", NOTE_CHARS)
        text = f"{_emoji(snapshot)} Opened" + (f": {summary}" if summary else "")
    else:
        text = f"ℹ️ {_untrusted(change, 100).capitalize()}"
    return clip(text, NOTE_CHARS)


def details_link(template: str | None, snapshot: dict) -> str | None:
    """Fill a URL template's {incident_id}, {trace_id} (the first exemplar trace id),
    {service} and {route}, each URL-quoted; other text is left as written.

    None without a template, and None when the template needs {trace_id} but the
    incident has no exemplar trace (a link to no trace would be a dead end).
    """
    if not template:
        return None
    exemplars = _list(_dict(snapshot.get("context")).get("exemplar_trace_ids"))
    trace_id = str(exemplars[0]) if exemplars and exemplars[0] else ""
    if "{trace_id}" in template and not trace_id:
        return None
    values = {"incident_id": snapshot.get("id"), "trace_id": trace_id,
              "service": snapshot.get("service"), "route": snapshot.get("route")}
    return _LINK_FIELDS.sub(lambda m: quote(str(values[m.group(1)] or ""), safe=""), template)
