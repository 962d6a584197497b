"""A resolved incident shows its peak and its value at recovery, not its last breach as
"Current": in the snapshot (JSONL summary), the Slack message and the console line.
Driven through the real pipeline on generated traffic with a fault that ends."""
from __future__ import annotations

from otel_ai.config import load_settings
from otel_ai.exporters.console import format_incident_line
from otel_ai.notify.blocks import render_incident
from otel_ai.testing.harness import run_generator
from otel_ai.testing.scenarios import steady_noise
from otel_ai.testing.traffic import Fault, TrafficGenerator


def test_resolved_snapshot_carries_peak_and_value_at_recovery():
    settings = load_settings(env={})
    generator = TrafficGenerator(seed=3, noise=steady_noise(), faults=[
        Fault("dependency_errors", start_s=360, params={"duration_s": 120, "rate": 0.6})])
    result = run_generator(generator, 360 + 120 + 190, settings)  # recovery takes 2 min of healthy traffic
    resolved = [c for c in result.changes if c.last_change == "resolved" and c.type == "ERROR_RATE_SPIKE"]
    assert resolved, [(c.type, c.last_change) for c in result.changes]
    incident = resolved[0]
    data = incident.data
    breaches = [c.data["current_value"] for c in result.changes if c.id == incident.id and c.last_change != "resolved"]
    assert data["peak_value"] == max(breaches) > data["threshold"]
    assert data["recovery_value"] is not None and data["recovery_value"] < data["threshold"]
    assert data["current_value"] == data["recovery_value"]  # "current" is what it is now, not the last breach
    assert "peaked at" in incident.summary and "at recovery" in incident.summary
    assert f"{data['peak_value']:.1f}%" in incident.summary

    text = str(render_incident(incident.snapshot()).blocks)
    assert "*Peak*" in text and "*At recovery*" in text and "*Current*" not in text
    line = format_incident_line(incident)
    assert f"peak {data['peak_value']:.1f}%" in line and "at recovery" in line
    print(f"\nresolved: {incident.summary}")
