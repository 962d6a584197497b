"""What the service graph costs per span on generated traffic, shop and deep (printed,
indicative: the coordinator re-measures on a quiet machine; nothing here asserts time),
and that on complete traces every span is joined: no orphans, nothing dropped."""
from __future__ import annotations

import pytest

from otel_ai.testing.harness import run_graph
from otel_ai.testing.scenarios import deep_background_noise, steady_noise
from otel_ai.testing.traffic import TrafficGenerator


@pytest.mark.parametrize("topology, noise", [("shop", steady_noise), ("deep", deep_background_noise)])
def test_every_span_of_complete_traces_is_joined_and_the_cost_is_reported(topology, noise):
    run = run_graph(TrafficGenerator(seed=4, topology=topology, noise=noise()), 90)
    join = run.graph.join
    assert run.spans > 40_000
    assert join.dropped == 0 and join.orphans == 0
    assert len(join) < run.spans / 90 * 20  # what waits is the last ~15 s, not the history
    print(f"\n{topology}: {run.spans} spans, graph {run.graph_cpu_s * 1e6 / run.spans:.2f} µs/span (process CPU, "
          f"join + stats), {len(run.graph.components)} components, state {run.graph.nbytes() / 2**20:.1f} MiB")
