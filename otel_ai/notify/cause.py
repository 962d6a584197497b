"""What an incident's cause is, and which notification it belongs under.

Two small decisions the notification policy takes for every incident:

- cause_key: incidents with the same key share one root cause, so one notification.
  An incident in a problem (otel_ai/problems.py) has its problem's root: what the service
  graph's localisation reached. One without (the graph could not place it) falls back to
  its dependency: a dependency's own incident, and routes whose failing (or slow)
  requests mostly carry `dependency.failed` (or `dependency.slow`) of that dependency;
  both spell a dependency root alike, so the two kinds group together.
- notification_key: the key of the notification an incident leads (PagerDuty's
  dedup_key, the webhook's groupKey, the outbox key): its problem's id, else its own.
  It never changes during an incident's life (problems.py keeps members where they are).
"""
from __future__ import annotations

from otel_ai.model import DEPENDENCY, SEVERITIES, Incident
from otel_ai.problems import root_key

GROUPING_KEYS = ("dependency.failed", "dependency.slow")
MIN_GROUPING_SHARE = 0.5  # the dependency must be in at least half of the bad requests


def cause_key(incident: Incident) -> str | None:
    if incident.problem_id is not None and incident.root_cause:
        return root_key(incident.root_cause)
    if incident.subject.kind == DEPENDENCY:
        return f"dependency:{incident.subject.service}"
    top = incident.suspects[0] if incident.suspects else None
    if top and top.get("key") in GROUPING_KEYS and (top.get("bad_share") or 0) >= MIN_GROUPING_SHARE:
        return f"dependency:{top.get('value')}"
    return None


def is_the_cause(incident: Incident) -> bool:
    """The incident is its cause's own (the failing dependency, or a route of the root
    service), not a symptom of it further up."""
    root = incident.root_cause
    if incident.problem_id is not None and root:
        kind, subject = root.get("kind"), incident.subject
        if kind == "dependency":  # the calls to it
            return subject.kind == DEPENDENCY and subject.service == root.get("dependency")
        if kind == "network":  # the calls into the service, where the delay shows
            return subject.kind == DEPENDENCY and subject.service == root.get("service")
        return subject.kind != DEPENDENCY and subject.service == root.get("service")  # its own routes
    return incident.subject.kind == DEPENDENCY


def notification_key(incident: Incident) -> str:
    return incident.problem_id or incident.id


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def rank(incident: Incident) -> tuple:
    """Which of two incidents with one cause leads their notification: the cause's own
    incident, then the more severe, then the earlier. Equal ranks: the one already leading stays."""
    return (is_the_cause(incident), severity_rank(incident.severity), -incident.opened_at_ns)
