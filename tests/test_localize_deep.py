"""Root cause on the deep topology: the service graph and localisation run straight over
the generator's batches (no detectors, no incidents). Each deep fault sits 3+ service hops
below the gateway; starting from the gateway's affected routes alone, the search must walk
down to it and name it, for two seeds each, 30 s after onset, on traffic with bursty
routes in the background."""
from __future__ import annotations

import pytest

from otel_ai.graph.localize import ERRORS_SIGNAL, LATENCY, Start, localize
from otel_ai.testing.harness import run_graph
from otel_ai.testing.scenarios import DEEP_SCENARIOS, deep_scenario

WARMUP_S = 100.0
AFTER_ONSET_S = 35.0  # slots close 5 s late: the last 3 closed slots are the 30 s after onset
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def runs():
    out = {}
    for name in DEEP_SCENARIOS:
        for seed in SEEDS:
            gen = deep_scenario(name, seed=seed, warmup_s=WARMUP_S, rate_scale=0.5)
            run = run_graph(gen, WARMUP_S + AFTER_ONSET_S)
            out[(name, seed)] = (gen, run, run.graph.snapshot(run.last_slot, 3))
    spans = sum(r.spans for _, r, _ in out.values())
    cpu = sum(r.graph_cpu_s for _, r, _ in out.values())
    print(f"\ndeep topology: {spans} spans through the graph, {cpu * 1e6 / spans:.2f} µs/span of graph CPU")
    return out


def starts_of(gen, run, service: str | None = None) -> list[Start]:
    out = []
    for truth in gen.ground_truth:
        signal = ERRORS_SIGNAL if "ERROR_RATE_SPIKE" in truth.types else LATENCY
        for kind, svc, method, route in truth.subjects:
            if kind == "route" and (service is None or svc == service):
                out.append(Start(run.subjects.route(svc, method, route), signal))
    return out


def matches(candidate, truth: dict) -> bool:
    kind = truth["kind"]
    if kind == "dependency":
        return candidate.kind == "dependency" and candidate.dependency == truth["dependency"]
    if kind == "pod":
        return candidate.kind == "pod" and candidate.pod == truth["pod"]
    return candidate.kind == kind and candidate.service == truth["service"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", DEEP_SCENARIOS)
def test_from_the_gateway_alone_the_search_reaches_the_root_3_hops_down(runs, name, seed):
    gen, run, snap = runs[(name, seed)]
    truth = gen.ground_truth[0].root_cause
    entry = starts_of(gen, run, "web-gateway")
    assert entry, gen.ground_truth
    for start in entry:
        found = localize(snap, [start])
        assert found and matches(found[0], truth), (name, seed, run.subjects.subjects[start.subject_id], truth,
                                                    [c.root_cause() for c in found[:3]])
        root = found[0]
        assert root.depth >= 3 and root.score >= 0.8
        assert root.evidence[0]["component"].startswith("web-gateway ") and len(root.evidence) >= 5
        first, last = root.evidence[0], root.evidence[-1]
        assert first["now"] > first["baseline"] and last["now"] > last["baseline"]


@pytest.mark.parametrize("name", DEEP_SCENARIOS)
def test_all_affected_routes_together_agree_on_one_root(runs, name):
    for seed in SEEDS:
        gen, run, snap = runs[(name, seed)]
        starts = starts_of(gen, run)
        assert len(starts) >= 3
        found = localize(snap, starts)
        assert matches(found[0], gen.ground_truth[0].root_cause)
        assert all(c.score < found[0].score / 2 for c in found[1:])


def test_network_delay_found_from_the_dependency_anomaly_on_the_callers_side(runs):
    gen, run, snap = runs[("network_delay", 1)]
    found = localize(snap, [Start(run.subjects.dependency("timetable-service"), LATENCY)])
    assert (found[0].kind, found[0].service, found[0].depth) == ("network", "timetable-service", 1)
    network_hop = found[0].evidence[-1]
    assert network_hop["metric"] == "overhead_ms" and network_hop["now"] - network_hop["baseline"] > 100

