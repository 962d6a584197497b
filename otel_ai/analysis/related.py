"""Other open incidents that may explain one: what an analysis prompt lists as related.

The analysis stage keeps its own view of the open incidents from the changes it
receives, so it never reads back from the incident stage.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from otel_ai.model import DEPENDENCY, SYSTEM, Incident
from otel_ai.timefmt import rfc3339

MAX_RELATED = 5
MAX_PROBLEM_MEMBERS = 12  # a problem's other routes and dependencies, listed before other related
MAX_OPEN = 10_000


def related_entry(incident: Incident) -> dict:
    """How another open incident is described in an analysis prompt."""
    return {"type": incident.type, "problem_id": incident.problem_id, "subject_kind": incident.subject.kind,
            "service": incident.subject.service,
            "route": incident.subject.route, "summary": incident.summary, "opened_at": rfc3339(incident.opened_at_ns),
            "metric": {k: incident.data.get(k) for k in ("metric", "current_value", "threshold", "unit")}}


def rank_related(incident: Incident, others: list[Incident]) -> list[dict]:
    """The incident's problem's other members (the routes and dependencies the same root
    affects, at most MAX_PROBLEM_MEMBERS), then dependencies, then the same service, newest
    first (at most MAX_RELATED of those)."""
    candidates = [i for i in others if i.id != incident.id and i.subject.kind != SYSTEM]
    same_problem = [i for i in candidates if incident.problem_id and i.problem_id == incident.problem_id]
    candidates = [i for i in candidates if i not in same_problem]
    candidates.sort(key=lambda i: (i.subject.kind != DEPENDENCY, i.subject.service != incident.subject.service,
                                   -i.opened_at_ns))
    picked = [i for i in candidates if i.subject.kind == DEPENDENCY or i.subject.service == incident.subject.service]
    same_problem.sort(key=lambda i: i.opened_at_ns)
    return [related_entry(i) for i in same_problem[:MAX_PROBLEM_MEMBERS] + picked[:MAX_RELATED]]


class OpenIncidents:
    """The latest state of every open incident, from the stream of changes (bounded)."""

    def __init__(self, limit: int = MAX_OPEN) -> None:
        self.limit = limit
        self._open: OrderedDict[str, Incident] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, incident: Incident) -> None:
        with self._lock:
            if incident.status == "resolved":
                self._open.pop(incident.id, None)
                return
            self._open[incident.id] = incident
            self._open.move_to_end(incident.id)
            while len(self._open) > self.limit:
                self._open.popitem(last=False)

    def related(self, incident: Incident) -> list[dict]:
        with self._lock:
            others = list(self._open.values())
        return rank_related(incident, others)
