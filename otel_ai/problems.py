"""Problems: the incidents whose localisation reached the same root, as one thing to page on.

Datadog and Dynatrace call it a problem: a fault three hops down makes its callers, their
callers and the gateway's routes breach too, each an incident of its own (each keeps its
own lifecycle: open, recovering, resolved, reopened). The problem is what an engineer
gets paged for once: one notification (its key is the problem id), one analysis, one
trace.

The book lives in the incident stage and is changed under its lock (dict work only, no
I/O). An incident joins when it opens with a root cause, and stays in that problem for
its life (a reopen rejoins it), so the notification it belongs to never changes key. A
problem is open while any member is; once the last one resolves, a new incident with
the same root within the cool-down rejoins it (a cascade that dips and returns is one
episode), later it starts a new problem.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from otel_ai.model import Incident

MAX_PROBLEMS = 10_000


def root_key(root: dict[str, Any]) -> str:
    """What a problem is about. A pod or version narrows a service without changing which
    service is at fault, so incidents narrowed differently still share the problem."""
    kind = root.get("kind")
    if kind == "dependency":
        return f"dependency:{root.get('dependency')}"
    if kind == "network":
        return f"network:{root.get('service')}"
    return f"service:{root.get('service')}"


def root_title(root: dict[str, Any]) -> str:
    """'network into timetable-service', 'pod fraud-7f9 of fraud-service', 'dependency config-db'."""
    kind = root.get("kind")
    if kind == "dependency":
        return f"dependency {root.get('dependency')}"
    if kind == "network":
        return f"network into {root.get('service')}"
    if kind == "pod":
        return f"pod {root.get('pod')} of {root.get('service')}"
    if kind == "version":
        return f"version {root.get('version')} of {root.get('service')}"
    return f"service {root.get('service')}"


def problem_id(key: str, opened_at_ns: int) -> str:
    """Deterministic, so a replay yields the same ids."""
    return "prb_" + hashlib.sha256(f"{key}|{opened_at_ns}".encode()).hexdigest()[:16]


@dataclass(slots=True)
class OpenProblem:
    id: str
    root_key: str
    opened_at_ns: int
    open_members: set[str] = field(default_factory=set)
    quiet_since_ns: int | None = None  # when its last open member resolved
    analysis: dict[str, Any] | None = None  # the one analysis, given to members that join later


class ProblemBook:
    def __init__(self, cooldown_ns: int, limit: int = MAX_PROBLEMS) -> None:
        self.cooldown_ns = cooldown_ns
        self.limit = limit
        self.by_id: OrderedDict[str, OpenProblem] = OrderedDict()
        self.by_root: dict[str, OpenProblem] = {}  # the latest problem of each root

    def join(self, incident: Incident, now_ns: int) -> str | None:
        """The problem an opening or reopening incident belongs to (None without a root)."""
        if incident.problem_id is not None:  # a reopen: back into its own problem, whatever its age
            problem = self.by_id.get(incident.problem_id)
            if problem is None and incident.root_cause:
                problem = self._add(OpenProblem(incident.problem_id, root_key(incident.root_cause), now_ns))
        elif incident.root_cause:
            key = root_key(incident.root_cause)
            problem = self.by_root.get(key)
            if problem is None or (problem.quiet_since_ns is not None
                                   and now_ns - problem.quiet_since_ns > self.cooldown_ns):
                problem = self._add(OpenProblem(problem_id(key, now_ns), key, now_ns))
        else:
            return None
        if problem is not None:
            problem.open_members.add(incident.id)
            problem.quiet_since_ns = None
            self.by_id.move_to_end(problem.id)
        return incident.problem_id or (problem.id if problem else None)

    def leave(self, incident: Incident, now_ns: int) -> None:
        """A member resolved."""
        problem = self.by_id.get(incident.problem_id) if incident.problem_id else None
        if problem is None:
            return
        problem.open_members.discard(incident.id)
        if not problem.open_members:
            problem.quiet_since_ns = now_ns

    def analyzed(self, problem_id: str, analysis: dict[str, Any]) -> None:
        problem = self.by_id.get(problem_id)
        if problem is not None:
            problem.analysis = analysis

    def analysis(self, problem_id: str | None) -> dict[str, Any] | None:
        problem = self.by_id.get(problem_id) if problem_id else None
        return problem.analysis if problem else None

    def open_problems(self) -> int:
        return sum(1 for p in self.by_id.values() if p.open_members)

    def _add(self, problem: OpenProblem) -> OpenProblem:
        self.by_id[problem.id] = problem
        self.by_root[problem.root_key] = problem
        while len(self.by_id) > self.limit:
            _, old = self.by_id.popitem(last=False)
            if self.by_root.get(old.root_key) is old:
                del self.by_root[old.root_key]
        return problem
