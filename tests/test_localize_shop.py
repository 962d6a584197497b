"""The shop's fault presets through the service graph and localisation: the root named is
the component each fault sits in (the suspects name the same version, pod or dependency);
a tenant has no place in the graph, so its fault is placed at the failing service."""
from __future__ import annotations

import pytest

from otel_ai.graph.localize import ERRORS_SIGNAL, LATENCY, Start, localize
from otel_ai.testing.harness import run_graph
from otel_ai.testing.scenarios import SCENARIOS, scenario

EXPECTED = {  # fault kind -> (root kind, the root's field holding the fault's target, or None)
    "bad_deploy": ("version", "version"),
    "bad_pod": ("pod", "pod"),
    "dependency_errors": ("dependency", "dependency"),
    "dependency_timeouts": ("dependency", "dependency"),
    "dependency_down": ("dependency", "dependency"),
    "slow_database": ("dependency", "dependency"),
    "route_regression": ("version", "version"),
    "tenant_failing": ("service", None),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_shop_faults_are_localised_where_they_sit(name):
    gen = scenario(name, seed=7, warmup_s=120, rate_scale=0.5)
    run = run_graph(gen, 155)  # the last 3 closed slots: the 30 s after onset
    starts = []
    for truth in gen.ground_truth:
        signal = ERRORS_SIGNAL if "ERROR_RATE_SPIKE" in truth.types else LATENCY
        for kind, service, method, route in truth.subjects:
            if kind == "route":
                grpc = service == "payments"
                starts.append(Start(run.subjects.route(service, "GRPC" if grpc else method,
                                                       f"{route}/{method}" if grpc else route), signal))
    root = localize(run.graph.snapshot(run.last_slot, 3), starts)[0]
    kind, field = EXPECTED[name]
    fault = gen.faults[0]
    assert root.kind == kind, (name, root.root_cause())
    if field is None:
        assert root.service == fault.service
    else:
        assert getattr(root, field) == fault.target, (name, root.root_cause())
    assert root.score >= 0.5
