"""PagerDuty, through the Events API v2: trigger, acknowledge, resolve, one alert per notification.

Each "message" row brings the PagerDuty alert to the incident's state: `trigger` when
it is open (again), `acknowledge` when someone acknowledged it (the Slack button, the
CLI, the API), `resolve` when it resolved, all with the same dedup_key (the
notification key: the incident id, later the problem id). Updates that change no state
send nothing, so PagerDuty pages once. An incident that resolved before it was ever
triggered is not sent at all. Notes (thread replies, reminders) mean nothing here.

Exactly once: PagerDuty deduplicates events by dedup_key, so an attempt whose outcome is
unknown is simply sent again (reconcile has nothing to look up).
"""
from __future__ import annotations

from typing import Any

import requests

from otel_ai.config import Settings
from otel_ai.notify.blocks import details_link
from otel_ai.notify.outbox import MESSAGE, Entry
from otel_ai.notifiers.base import Sent, http_post

SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}  # PagerDuty also has "error"
MAX_SUMMARY = 1024  # PagerDuty's limit
TOP_SUSPECTS = 3


def wanted_actions(status: str, last: str | None) -> list[str]:
    """The events that take a PagerDuty alert from its last action to the incident's status."""
    if status == "resolved":
        return ["resolve"] if last in ("trigger", "acknowledge") else []
    if last in (None, "resolve"):
        return ["trigger", "acknowledge"] if status == "acknowledged" else ["trigger"]
    if status == "acknowledged" and last == "trigger":
        return ["acknowledge"]
    return []


class PagerDutyNotifier:
    name = "pagerduty"
    notifies = True

    def __init__(self, settings: Settings, routing_key: str, session: requests.Session | None = None) -> None:
        self.rules = settings.pagerduty
        self.routing_key = routing_key
        self.session = session or requests.Session()

    def send(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        if entry.kind != MESSAGE:
            return Sent(None)
        snapshot = entry.payload.get("incident") or {}
        last = (ref or {}).get("action")
        actions = wanted_actions(str(snapshot.get("status")), last)
        if not actions:
            return Sent(None)
        action = actions[0]
        http_post(self.session, self.rules.events_url, self.rules.timeout, describe=_error_text,
                  json=self.event(action, entry.incident_id, snapshot, entry.payload.get("related") or []))
        created = action == "trigger"
        return Sent({"action": action, "dedup_key": entry.incident_id}, created=created, more=len(actions) > 1,
                    detail={"messaging.system": "pagerduty", "pagerduty.dedup_key": entry.incident_id} if created
                    else {})

    def reconcile(self, entry: Entry, ref: dict[str, Any] | None) -> Sent | None:
        return None  # events are idempotent per dedup_key: sending again is the reconciliation

    def shutdown(self) -> None:
        self.session.close()

    def event(self, action: str, dedup_key: str, snapshot: dict[str, Any], related: list[dict]) -> dict[str, Any]:
        event: dict[str, Any] = {"routing_key": self.routing_key, "event_action": action, "dedup_key": dedup_key,
                                 "client": "otel-ai"}
        if action != "trigger":
            return event
        link = details_link(self.rules.details_url, snapshot)
        event["payload"] = {
            "summary": str(snapshot.get("summary") or snapshot.get("type") or "incident")[:MAX_SUMMARY],
            "source": self.rules.source,
            "severity": SEVERITY.get(str(snapshot.get("severity")), "error"),
            "timestamp": snapshot.get("opened_at"),
            "component": snapshot.get("service") or "",
            "group": snapshot.get("route") or "",
            "class": snapshot.get("type") or "",
            "custom_details": custom_details(snapshot, related),
        }
        if link:
            event["links"] = [{"href": link, "text": "Incident details"}]
            event["client_url"] = link
        return event


def custom_details(snapshot: dict[str, Any], related: list[dict]) -> dict[str, Any]:
    """What a responder reads in the alert: summary, root cause, suspects, exemplar traces."""
    analysis = snapshot.get("analysis") if isinstance(snapshot.get("analysis"), dict) else {}
    causes = [c for c in analysis.get("root_causes") or [] if isinstance(c, dict)]
    suspects = [s for s in snapshot.get("suspects") or [] if isinstance(s, dict)][:TOP_SUSPECTS]
    data = snapshot.get("data") if isinstance(snapshot.get("data"), dict) else {}
    context = snapshot.get("context") if isinstance(snapshot.get("context"), dict) else {}
    return {
        "incident_id": snapshot.get("id"),
        "summary": snapshot.get("summary"),
        "status": snapshot.get("status"),
        "confidence": snapshot.get("confidence"),
        "root_cause": causes[0].get("cause") if causes else snapshot.get("root_cause"),
        "analysis": analysis.get("summary"),
        "actions": (analysis.get("actions") or [])[:3],
        "rollback_recommended": bool(analysis.get("rollback_needed")),
        "suspects": [f"{s.get('key')}={s.get('value')} ({_share(s.get('bad_share'))} of failing vs "
                     f"{_share(s.get('good_share'))} of healthy requests)" for s in suspects],
        "metric": {k: data.get(k) for k in ("metric", "current_value", "threshold", "baseline_value", "unit", "window")},
        "exemplar_trace_ids": list(context.get("exemplar_trace_ids") or [])[:5],
        "related_incidents": [f"{r.get('type')} {r.get('service')} {r.get('route')}: {r.get('summary')}"
                              for r in related[:10]],
    }


def _share(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, (int, float)) else "?"


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("status") or "")[:100] + (
            f": {body['errors']}"[:200] if body.get("errors") else "")
    return str(body)[:200]
