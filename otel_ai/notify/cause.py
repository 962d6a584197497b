"""What an incident's cause is, and which notification it belongs under.

Two small decisions the notification policy takes for every incident, kept here so that
grouping incidents into problems (a later stage) can replace them in one place:

- cause_key: incidents with the same key share one root cause. Today: a dependency's
  own incident, and routes whose failing (or slow) requests mostly carry
  `dependency.failed` (or `dependency.slow`) of that dependency.
- notification_key: the key of the notification an incident leads (PagerDuty's
  dedup_key, the webhook's groupKey, the outbox key). Today the incident id; with
  problems, the problem id.
"""
from __future__ import annotations

from otel_ai.model import DEPENDENCY, SEVERITIES, Incident

GROUPING_KEYS = ("dependency.failed", "dependency.slow")
MIN_GROUPING_SHARE = 0.5  # the dependency must be in at least half of the bad requests


def cause_key(incident: Incident) -> str | None:
    if incident.subject.kind == DEPENDENCY:
        return f"dependency:{incident.subject.service}"
    top = incident.suspects[0] if incident.suspects else None
    if top and top.get("key") in GROUPING_KEYS and (top.get("bad_share") or 0) >= MIN_GROUPING_SHARE:
        return f"dependency:{top.get('value')}"
    return None


def is_the_cause(incident: Incident) -> bool:
    """The incident is its cause's own (the failing dependency), not a symptom of it."""
    return incident.subject.kind == DEPENDENCY


def notification_key(incident: Incident) -> str:
    return incident.id


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def rank(incident: Incident) -> tuple:
    """Which of two incidents with one cause leads their notification: the cause's own
    incident, then the more severe, then the earlier. Equal ranks: the one already leading stays."""
    return (is_the_cause(incident), severity_rank(incident.severity), -incident.opened_at_ns)
