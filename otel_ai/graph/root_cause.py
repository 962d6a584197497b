"""Localisation for the pipeline: each anomaly's root cause, once per closed slot.

The pipeline worker calls ``Localizer.attach(anomalies, closed_slot)`` after the detectors
and before the incident stage: one snapshot of the graph's stats, then a walk down from
each anomalous subject (graph/localize.py). It runs on the worker, never under the
incident lock, and does no I/O; the incident stage only copies what it set.

Also here: the root as suspect #1, in the vocabulary of the suspects stage.
"""
from __future__ import annotations

from typing import Any

from otel_ai.graph.localize import ERRORS_SIGNAL, LATENCY, Start, localize
from otel_ai.graph.service_graph import ServiceGraph
from otel_ai.model import Anomaly

# The recent window compared with the baseline: 30 s at the default 10 s slots, so a fault
# is judged on its first slots rather than diluted by minutes before its onset.
WINDOW_SLOTS = 3
MAX_PER_SLOT = 32  # anomalies localised per closed slot: a bound whatever fires at once
SIGNALS = {"error": ERRORS_SIGNAL, "slow": LATENCY}  # an anomaly's bad_rule -> what to follow down


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
        placed = 0
        for anomaly in todo:
            found = localize(snapshot, [Start(anomaly.subject_id, signal_of(anomaly))])
            if found:
                anomaly.root_cause = found[0].root_cause()
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


def with_root_first(suspects: list[dict[str, Any]], root: dict[str, Any] | None, bad_rule: str) -> list[dict[str, Any]]:
    """Suspects with the root as #1; the same pair found by the suspects stage keeps its shares."""
    if root is None:
        return suspects
    first = root_suspect(root, bad_rule)
    rest = []
    for suspect in suspects:
        if suspect.get("key") == first["key"] and suspect.get("value") == first["value"]:
            first = {**suspect, **first}
        else:
            rest.append(suspect)
    return [first, *rest]
