"""Localisation as a pure function over a hand-built graph snapshot:

    gw GET /a ──▶ mid GET /b ──(3 calls per request)──▶ leaf GET /c ──▶ db (uninstrumented)

Each test changes one component's own contribution (and, consistently, the totals above
it) and checks what the search names, its score and its hop-by-hop evidence."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.graph.components import EDGE, NONE, POD, ROUTE
from otel_ai.graph.localize import ERRORS_SIGNAL, LATENCY, Start, localize
from otel_ai.graph.stats import N_FIELDS, GraphSnapshot
from otel_ai.model import DEPENDENCY, ROUTE as ROUTE_SUBJECT, Subject
from otel_ai.resources import ResourceInfo

SUBJECTS = [Subject(ROUTE_SUBJECT, "(other)", "", "")] * 20
SUBJECTS[1] = Subject(ROUTE_SUBJECT, "gw", "GET", "/a")
SUBJECTS[2] = Subject(ROUTE_SUBJECT, "mid", "GET", "/b")
SUBJECTS[3] = Subject(ROUTE_SUBJECT, "leaf", "GET", "/c")
SUBJECTS[10] = Subject(DEPENDENCY, "mid", "", "mid")
SUBJECTS[11] = Subject(DEPENDENCY, "leaf", "", "leaf")
SUBJECTS[12] = Subject(DEPENDENCY, "db", "", "db")
RESOURCES = [ResourceInfo("(other)", -1, "", "", ())] + [
    ResourceInfo("leaf", 2, f"leaf-{i}", "1.0" if i < 2 else "2.0", ()) for i in range(4)
]
N = 1000  # requests of gw (and mid) in each window


def row(n: float, total: float, own: float, err: float = 0.002, origin: float = 0.002) -> np.ndarray:
    """Sums for n requests with these means (standard deviation 20 % of the mean)."""
    out = np.zeros(N_FIELDS)
    out[:] = (n, n * err, n * origin, n * total, n * total**2 * 1.04, n * own, n * own**2 * 1.04)
    return out


def healthy() -> dict:
    """Component -> (now, base) rows of a healthy graph; keys are (kind, a, b, c)."""
    same = lambda r: (r, r.copy())  # noqa: E731
    return {
        (ROUTE, 1, 0, 0): same(row(N, 62.0, 2.0)),
        (EDGE, 1, 10, 2): same(row(N, 60.0, 1.0)),
        (ROUTE, 2, 0, 0): same(row(N, 59.0, 5.0)),
        (EDGE, 2, 11, 3): same(row(3 * N, 18.0, 1.0)),
        (ROUTE, 3, 0, 0): same(row(3 * N, 17.0, 10.0)),
        (EDGE, 3, 12, NONE): same(row(3 * N, 7.0, 7.0)),
        **{(POD, 1 + i, 0, 0): same(row(3 * N / 4, 17.0, 10.0)) for i in range(4)},
    }


def bump(graph: dict, key: tuple, **now) -> None:
    base = graph[key][1]
    n = base[0]
    values = dict(total=base[3] / n, own=base[5] / n, err=base[1] / n, origin=base[2] / n)
    values.update(now)
    graph[key] = (row(n, values["total"], values["own"], values["err"], values["origin"]), base)


def snapshot(graph: dict) -> GraphSnapshot:
    keys = [(0, 0, 0, 0)] + list(graph)
    now = np.array([np.zeros(N_FIELDS)] + [graph[k][0] for k in graph])
    base = np.array([np.zeros(N_FIELDS)] + [graph[k][1] for k in graph])
    kind, a, b, c = (np.array(col, dtype=np.int64) for col in zip(*keys))
    return GraphSnapshot(now, base, kind, a, b, c, SUBJECTS, ["gw", "mid", "leaf"], RESOURCES, 30.0)


# What sits above each place a delay can be added, with calls per gw request.
ABOVE_NETWORK = [((ROUTE, 2, 0, 0), 3), ((EDGE, 1, 10, 2), 3), ((ROUTE, 1, 0, 0), 3)]
ABOVE_LEAF = [((EDGE, 2, 11, 3), 1)] + ABOVE_NETWORK
ABOVE_DB = [((ROUTE, 3, 0, 0), 1)] + ABOVE_LEAF


def slow_down(graph: dict, own_key: tuple, extra_ms: float, above: list) -> None:
    """own_key's own time grows by extra_ms per call; the totals of `above` by calls x extra_ms."""
    base = graph[own_key][1]
    bump(graph, own_key, own=base[5] / base[0] + extra_ms, total=base[3] / base[0] + extra_ms)
    for key, calls in above:
        base = graph[key][1]
        bump(graph, key, total=base[3] / base[0] + calls * extra_ms)


def test_network_delay_into_a_service_names_its_inbound_network_with_the_chain():
    graph = healthy()
    slow_down(graph, (EDGE, 2, 11, 3), 100.0, ABOVE_NETWORK)  # the leaf's own server spans do not see it
    found = localize(snapshot(graph), [Start(1, LATENCY)])
    root = found[0]
    assert (root.kind, root.service) == ("network", "leaf")
    assert root.score == pytest.approx(1.0, abs=0.05) and root.depth == 2
    hops = [(h["component"], h["metric"]) for h in root.evidence]
    assert hops == [("gw GET /a", "latency_ms"), ("gw → mid", "call_ms"), ("mid GET /b", "latency_ms"),
                    ("mid → leaf", "call_ms"), ("mid → leaf (network)", "overhead_ms")]
    assert root.evidence[-1]["baseline"] == 1.0 and root.evidence[-1]["now"] == 101.0
    assert root.evidence[-1]["calls_per_request"] == 3.0
    assert root.root_cause()["kind"] == "network" and root.root_cause()["evidence"] == root.evidence


def test_own_time_of_a_deep_route_names_its_service_and_operation():
    graph = healthy()
    slow_down(graph, (ROUTE, 3, 0, 0), 50.0, ABOVE_LEAF)
    for i in range(4):
        bump(graph, (POD, 1 + i, 0, 0), own=60.0, total=67.0)
    root = localize(snapshot(graph), [Start(1, LATENCY)])[0]
    assert (root.kind, root.service, root.operation) == ("service", "leaf", "leaf GET /c")
    assert root.evidence[-1] == {"component": "leaf GET /c (own)", "metric": "own_ms", "baseline": 10.0,
                                 "now": 60.0, "calls_per_request": 3.0}


def test_a_slow_uninstrumented_dependency_is_named_with_the_service_calling_it():
    graph = healthy()
    slow_down(graph, (EDGE, 3, 12, NONE), 400.0, ABOVE_DB)
    found = localize(snapshot(graph), [Start(1, LATENCY), Start(2, LATENCY)])
    assert (found[0].kind, found[0].dependency, found[0].service) == ("dependency", "db", "leaf")
    assert found[0].evidence[0]["component"] == "gw GET /a"  # the longest chain of the two starts
    assert all(c.score < 0.1 for c in found[1:])


def test_a_cpu_starved_pod_is_named_and_a_bad_version_is_named_as_a_version():
    graph = healthy()
    slow_down(graph, (ROUTE, 3, 0, 0), 30.0, ABOVE_LEAF)
    bump(graph, (POD, 2, 0, 0), own=130.0, total=137.0)  # one pod of four took it all
    root = localize(snapshot(graph), [Start(1, LATENCY)])[0]
    assert (root.kind, root.service, root.pod, root.version) == ("pod", "leaf", "leaf-1", "1.0")
    assert root.evidence[-1]["share_of_excess"] == 1.0 and root.evidence[-1]["now"] == 130.0

    graph = healthy()
    slow_down(graph, (ROUTE, 3, 0, 0), 30.0, ABOVE_LEAF)
    for pod in (3, 4):  # the two pods running 2.0
        bump(graph, (POD, pod, 0, 0), own=70.0, total=77.0)
    root = localize(snapshot(graph), [Start(1, LATENCY)])[0]
    assert (root.kind, root.service, root.version, root.pod) == ("version", "leaf", "2.0", None)


def test_errors_are_traced_to_where_they_originate():
    graph = healthy()
    bump(graph, (ROUTE, 3, 0, 0), err=0.102, origin=0.102)  # 10 % of leaf calls fail on their own
    bump(graph, (EDGE, 2, 11, 3), err=0.102, origin=0.002)
    for key in ((ROUTE, 2, 0, 0), (EDGE, 1, 10, 2), (ROUTE, 1, 0, 0)):
        bump(graph, key, err=0.27, origin=0.002)  # three calls: 1 - 0.9^3 of requests fail
    root = localize(snapshot(graph), [Start(1, ERRORS_SIGNAL)])[0]
    assert (root.kind, root.service) == ("service", "leaf")
    assert root.score == pytest.approx(1.0, abs=0.15)
    assert root.evidence[0] == {"component": "gw GET /a", "metric": "error_rate_%", "baseline": 0.2, "now": 27.0,
                                "calls_per_request": 1.0}
    assert root.evidence[-1]["metric"] == "origin_rate_%" and root.evidence[-1]["now"] == 10.2


def test_nothing_changed_nothing_named():
    assert localize(snapshot(healthy()), [Start(1, LATENCY), Start(1, ERRORS_SIGNAL), Start(11, LATENCY)]) == []
    graph = healthy()
    bump(graph, (ROUTE, 1, 0, 0), total=40.0)  # faster is not an anomaly to explain
    assert localize(snapshot(graph), [Start(1, LATENCY)]) == []


def test_close_scores_go_to_the_deeper_candidate():
    graph = healthy()
    bump(graph, (ROUTE, 2, 0, 0), own=5.0 + 51.0, total=59.0 + 51.0 + 3 * 16.0)  # mid: +51 ms of its own
    bump(graph, (ROUTE, 3, 0, 0), own=26.0, total=33.0)  # leaf: +16 ms per call, 3 calls: +48 ms
    bump(graph, (EDGE, 2, 11, 3), total=34.0)
    for key in ((EDGE, 1, 10, 2), (ROUTE, 1, 0, 0)):
        bump(graph, key, total=graph[key][1][3] / N + 99.0)
    found = localize(snapshot(graph), [Start(1, LATENCY)])
    scores = {c.service: round(c.score, 2) for c in found}
    assert scores["mid"] > scores["leaf"] >= 0.9 * scores["mid"]
    assert found[0].service == "leaf"


def test_a_dependency_anomaly_starts_from_every_edge_that_calls_it():
    graph = healthy()
    slow_down(graph, (EDGE, 2, 11, 3), 100.0, ABOVE_NETWORK)
    root = localize(snapshot(graph), [Start(11, LATENCY)])[0]
    assert (root.kind, root.service, root.depth) == ("network", "leaf", 1)
    assert root.evidence[0]["component"] == "mid → leaf"


def test_a_service_wide_slowdown_is_not_pinned_on_its_busiest_pod():
    graph = healthy()
    slow_down(graph, (ROUTE, 3, 0, 0), 30.0, ABOVE_LEAF)
    n = 3 * N / 4
    for pod, share in ((1, 3.4), (2, 0.2), (3, 0.2), (4, 0.2)):  # one pod got 85 % of the requests
        graph[(POD, pod, 0, 0)] = (row(n * share, 47.0, 40.0), graph[(POD, pod, 0, 0)][1])
    root = localize(snapshot(graph), [Start(1, LATENCY)])[0]
    assert (root.kind, root.service, root.pod) == ("service", "leaf", None)
