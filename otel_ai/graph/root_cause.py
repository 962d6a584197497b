"""Localisation for the pipeline: each anomaly's root cause, once per closed slot.

The pipeline worker calls ``Localizer.attach(anomalies, closed_slot)`` after the detectors
and before the incident stage: one snapshot of the graph's stats, then a walk down from
each anomalous subject (graph/localize.py). It runs on the worker, never under the
incident lock, and does no I/O; the incident stage only copies what it set.

Also here: the root as suspect #1, in the vocabulary of the suspects stage.
"""
from __future__ import annotations

from typing import Any

from otel_ai.graph.localize import ERRORS_SIGNAL, LATENCY, Start, localize_each
from otel_ai.graph.service_graph import ServiceGraph
from otel_ai.model import ROUTE, Anomaly, Subject

# The recent window compared with the baseline: 30 s at the default 10 s slots, so a fault
# is judged on its first slots rather than diluted by minutes before its onset.
WINDOW_SLOTS = 3
MAX_PER_SLOT = 32  # anomalies localised per closed slot: a bound whatever fires at once
SIGNALS = {"error": ERRORS_SIGNAL, "slow": LATENCY}  # an anomaly's bad_rule -> what to follow down
OWN_KINDS = ("service", "pod", "version")  # roots inside a service's own code
STRONG_SUSPECT = 0.5  # bad share minus good share of a suspect that says more than an own-service root


def signal_of(anomaly: Anomaly) -> str | None:
    """Errors or latency; None for anomalies that are not about either (429s, retries, auth)."""
    return SIGNALS.get(anomaly.bad_rule)


class Localizer:
    def __init__(self, graph: ServiceGraph) -> None:
        self.graph = graph

    def attach(self, anomalies: list[Anomaly], closed_slot: int) -> int:
        """Set ``root_cause`` on each anomaly whose cause the graph can place; returns how many."""
        todo = [a for a in anomalies if signal_of(a) is not None][:MAX_PER_SLOT]
        if not todo:
            return 0
        snapshot = self.graph.snapshot(closed_slot, WINDOW_SLOTS)
        found = localize_each(snapshot, [Start(a.subject_id, signal_of(a)) for a in todo])
        placed = 0
        for anomaly, candidates in zip(todo, found):
            if candidates:
                anomaly.root_cause = candidates[0].root_cause()
                placed += 1
        return placed


def root_suspect(root: dict[str, Any], bad_rule: str) -> dict[str, Any]:
    """The root as a suspect line: the attribute that names it, with localisation's score."""
    kind = root.get("kind")
    if kind == "dependency":
        key, value = ("dependency.failed" if bad_rule == "error" else "dependency.slow"), root.get("dependency")
    elif kind == "network":
        key, value = "network.inbound", root.get("service")
    elif kind == "pod":
        key, value = "k8s.pod.name", root.get("pod")
    elif kind == "version":
        key, value = "service.version", root.get("version")
    else:
        key, value = "service.name", root.get("service")
    return {"key": key, "value": value, "score": root.get("score"), "source": "root_cause"}


def with_root_first(suspects: list[dict[str, Any]], root: dict[str, Any] | None, bad_rule: str,
                    subject: Subject) -> list[dict[str, Any]]:
    """Suspects with the root as #1, where the root says more than the suspects stage can:

    - the suspects stage's own line for the same pair, or for the same dependency under the
      other key (timeouts both fail and are slow), takes the root's place and score;
    - a root in the route's own service (its code, a pod, a version) is what the suspects
      stage looks at too, and it sees finer (the version, the tenant, the pod behind it):
      when its top suspect is strong, its list stands as it is (the incident's root_cause
      still names the root).
    """
    if root is None:
        return suspects
    own_service = subject.kind == ROUTE and root.get("kind") in OWN_KINDS and root.get("service") == subject.service
    if own_service and suspects and (suspects[0].get("score") or 0) >= STRONG_SUSPECT:
        return suspects
    first = root_suspect(root, bad_rule)
    same = {(first["key"], first["value"])}
    if root.get("kind") == "dependency":
        same = {(key, root.get("dependency")) for key in ("dependency.failed", "dependency.slow")}
    found = next((s for s in suspects if (s.get("key"), s.get("value")) in same), None)
    if found is not None:
        first = {**found, "score": first["score"], "source": first["source"]}
    return [first, *(s for s in suspects if s is not found)]
