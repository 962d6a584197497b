"""HTML of the incident list and of one incident. Everything shown comes from telemetry
or from a model, so every value is escaped; there is no script on either page."""
from __future__ import annotations

from html import escape
from typing import Any

from otel_ai.analysis.render import percent
from otel_ai.model import Incident
from otel_ai.notify.blocks import details_link
from otel_ai.page.chart import metric_chart
from otel_ai.problems import root_title
from otel_ai.timefmt import rfc3339

# No script, no remote anything: styles inline, forms post back to this server only.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'"

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #eee}
table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eee}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;color:#fff}
.open{background:#c0392b}.acknowledged{background:#d68910}.resolved{background:#1e8449}
.critical{color:#c0392b}.warning{color:#b9770e}.info{color:#2471a3}
.muted{color:#777}.axis{font-size:11px;fill:#555}.num{font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px} dt{color:#666}
form{margin:12px 0;padding:12px;background:#f6f6f6;border-radius:6px}
input{margin-right:8px} button{padding:4px 14px}
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def incident_list(incidents: list[Incident], total: int, status: str | None) -> str:
    filters = " · ".join(f'<a href="/incidents{"?status=" + s if s else ""}">{s or "all"}</a>'
                         for s in (None, "open", "acknowledged", "resolved"))
    rows = "".join(
        f'<tr><td><a href="/incidents/{escape(i.id)}">{escape(i.id)}</a></td>'
        f'<td>{_badge(i.status)}</td><td class="{escape(i.severity)}">{escape(i.severity)}</td>'
        f'<td>{escape(i.type)}</td><td>{escape(i.summary)}</td><td class="num">{escape(rfc3339(i.opened_at_ns))}</td></tr>'
        for i in incidents)
    table = (f"<table><tr><th>id</th><th>status</th><th>severity</th><th>type</th><th>summary</th><th>opened</th></tr>"
             f"{rows}</table>" if incidents else '<p class="muted">No incidents.</p>')
    heading = f"Incidents{' (' + escape(status) + ')' if status else ''}"
    return page(heading, f"<h1>{heading}</h1><p class=muted>{total} in total · show {filters}</p>{table}")


def incident_detail(incident: Incident, trace_url: str | None, ack_needs_token: bool, notice: str = "") -> str:
    s = incident.snapshot()
    data, context = s.get("data") or {}, s.get("context") or {}
    unit = str(data.get("unit") or "")
    where = " ".join(str(part) for part in (s.get("service"), s.get("method"), s.get("route")) if part)
    body = [
        '<p><a href="/incidents">← all incidents</a></p>',
        f'<h1>{escape(s["type"])} <span class="{escape(s["severity"])}">{escape(s["severity"])}</span> '
        f'{_badge(s["status"])}</h1>',
        f'<p class="summary">{escape(s["summary"])}</p>',
        f'<p class=muted>{escape(where)} · confidence {s["confidence"]:.0%} · {escape(s["id"])}</p>',
        f'<p class="notice"><strong>{escape(notice)}</strong></p>' if notice else "",
        _ack_form(s, ack_needs_token),
        "<h2>Metric</h2>", _metric_facts(data, unit),
        metric_chart(list(context.get("recent_samples") or []), _number(data.get("threshold")),
                     _number(data.get("baseline_value")), unit),
        "<h2>Timeline</h2>", _timeline(incident),
        "<h2>Suspects</h2>", _suspects(s.get("suspects") or []),
        "<h2>Root cause</h2>", _root_cause(s.get("root_cause")),
        "<h2>Top errors</h2>", _top_errors(context.get("top_errors") or []),
        "<h2>Exemplar traces</h2>", _traces(s, list(context.get("exemplar_trace_ids") or []), trace_url),
        "<h2>Analysis</h2>", _analysis(s.get("analysis")),
    ]
    return page(f"{s['type']} {where}", "".join(body))


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _metric_facts(data: dict, unit: str) -> str:
    facts = [("metric", data.get("metric")), ("current", _with_unit(data.get("current_value"), unit)),
             ("threshold", _with_unit(data.get("threshold"), unit)),
             ("baseline", _with_unit(data.get("baseline_value"), unit)), ("window", data.get("window")),
             ("trend", data.get("trend"))]
    return "<dl class=metric>" + "".join(f"<dt>{name}</dt><dd class='num {name}'>{escape(str(value))}</dd>"
                                         for name, value in facts if value not in (None, "")) + "</dl>"


def _with_unit(value: Any, unit: str) -> str | None:
    number = _number(value)
    return None if number is None else f"{number:g}{unit}"


def _timeline(incident: Incident) -> str:
    events = [(incident.opened_at_ns, "opened")]
    if incident.acknowledged_at_ns:
        events.append((incident.acknowledged_at_ns, f"acknowledged by {incident.acknowledged_by or '?'}"))
    if incident.resolved_at_ns:
        events.append((incident.resolved_at_ns, "resolved"))
    events.append((incident.updated_at_ns, f"last change: {incident.last_change} (version {incident.version})"))
    return "<table class=timeline>" + "".join(
        f"<tr><td class=num>{escape(rfc3339(at))}</td><td>{escape(what)}</td></tr>"
        for at, what in sorted(events, key=lambda e: e[0])) + "</table>"


def _suspects(suspects: list[dict]) -> str:
    if not suspects:
        return '<p class="muted">No attribute stands out among the failing requests.</p>'
    rows = "".join(
        f"<tr><td>{escape(str(x.get('key')))}</td><td>{escape(str(x.get('value')))}</td>"
        f"<td class=num>{x.get('bad_share', 0):.0%}</td><td class=num>{x.get('good_share', 0):.0%}</td>"
        f"<td class=num>{x.get('score', 0):.2f}</td></tr>" for x in suspects)
    return ("<table class=suspects><tr><th>attribute</th><th>value</th><th>of bad requests</th>"
            f"<th>of good requests</th><th>score</th></tr>{rows}</table>")


def _root_cause(root_cause: Any) -> str:
    if not root_cause:
        return '<p class="muted">Not determined.</p>'
    if not isinstance(root_cause, dict):
        return f"<p>{escape(str(root_cause))}</p>"
    score = root_cause.get("score")
    explains = f" · explains {score:.0%} of the change" if isinstance(score, (int, float)) else ""
    rows = "".join(
        f"<tr><td>{escape(str(hop.get('component', '')))}</td><td>{escape(str(hop.get('metric', '')))}</td>"
        f"<td>{escape(str(hop.get('baseline')))}</td><td>{escape(str(hop.get('now')))}</td></tr>"
        for hop in root_cause.get("evidence") or [] if isinstance(hop, dict))
    chain = (f"<table class=suspects><tr><th>hop</th><th>metric</th><th>baseline</th><th>now</th></tr>{rows}</table>"
             if rows else "")
    return f"<p><strong>{escape(root_title(root_cause))}</strong>{escape(explains)}</p>{chain}"


def _top_errors(errors: list[dict]) -> str:
    if not errors:
        return '<p class="muted">No exceptions recorded on the failing requests.</p>'
    return "<table>" + "".join(
        f"<tr><td class=num>{e.get('count', 0)}×</td><td>{escape(str(e.get('type', '')))}</td>"
        f"<td>{escape(str(e.get('message', '')))}</td></tr>" for e in errors) + "</table>"


def _traces(snapshot: dict, trace_ids: list[str], trace_url: str | None) -> str:
    if not trace_ids:
        return '<p class="muted">No exemplar traces.</p>'
    items = []
    for trace_id in trace_ids:
        link = details_link(trace_url, {**snapshot, "context": {"exemplar_trace_ids": [trace_id]}})
        items.append(f'<li><a class="trace" href="{escape(link)}">{escape(trace_id)}</a></li>' if link
                     else f"<li><code>{escape(trace_id)}</code></li>")
    hint = "" if trace_url else ('<p class="muted">Set admin.traceUrl (e.g. '
                                 "<code>http://jaeger:16686/trace/{trace_id}</code>) to link these.</p>")
    return f"<ul class=traces>{''.join(items)}</ul>{hint}"


def _analysis(analysis: dict | None) -> str:
    if not analysis:
        return '<p class="muted">Not analysed yet.</p>'
    parts = [f"<p>{escape(str(analysis.get('summary', '')))}</p>"]
    causes = analysis.get("root_causes") or []
    if causes:
        parts.append("<ol>" + "".join(f"<li>{escape(str(c.get('cause', '?')))} "
                                      f"({escape(percent(c.get('probability')))})</li>" for c in causes) + "</ol>")
    actions = analysis.get("actions") or []
    if actions:
        parts.append("<p>Actions:</p><ul>" + "".join(f"<li>{escape(str(a))}</li>" for a in actions) + "</ul>")
    if analysis.get("rollback_reasoning"):
        verdict = "Rollback recommended" if analysis.get("rollback_needed") else "No rollback"
        parts.append(f"<p>{verdict}: {escape(str(analysis['rollback_reasoning']))}</p>")
    if analysis.get("user_impact"):
        parts.append(f"<p>Impact: {escape(str(analysis['user_impact']))}</p>")
    source = "offline analysis" if analysis.get("source") == "offline" else str(analysis.get("model") or "Claude")
    parts.append(f'<p class="muted">{escape(source)}</p>')
    return "".join(parts)


def _ack_form(snapshot: dict, needs_token: bool) -> str:
    if snapshot["status"] != "open":
        return ""
    token = ('<label>admin token <input type=password name=token autocomplete=off required></label>'
             if needs_token else "")
    return (f'<form method=post action="/incidents/{escape(snapshot["id"])}/ack">'
            '<label>your name <input name=by required maxlength=100></label>'
            f'{token}<button type=submit>Acknowledge</button></form>')
