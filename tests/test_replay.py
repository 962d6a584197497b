"""Replay: recorded OTLP JSON lines, fed as fast as possible, give the same incidents at
the same event times however the traffic was batched."""
from __future__ import annotations

import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.cli import main
from otel_ai.receiver.otlp_json import to_otlp_json
from otel_ai.testing.harness import run_generator
from otel_ai.testing.scenarios import scenario

WARMUP_S = 420.0
DURATION_S = 480.0
RATE = 0.1  # JSON is the slow path; a tenth of the traffic keeps this test short


def _write_jsonl(path, interval_s: float) -> None:
    generator = scenario("dependency_down", seed=11, warmup_s=WARMUP_S, rate_scale=RATE)
    with open(path, "w") as f:
        for body in generator.serialized_batches(DURATION_S, interval_s=interval_s):
            f.write(to_otlp_json(ExportTraceServiceRequest.FromString(body)) + "\n")
        f.write("this line is not OTLP JSON\n")  # a bad line is reported and skipped


def _opened(path):
    events = [json.loads(line) for line in open(path)]
    return sorted((e["id"], e["type"], e["opened_at"]) for e in events if e["change"] == "opened")


def test_replay_is_deterministic_and_independent_of_batching(tmp_path, capsys):
    for interval in (1.0, 5.0):
        _write_jsonl(tmp_path / f"traffic-{interval}.jsonl", interval)
        out = tmp_path / f"incidents-{interval}.jsonl"
        assert main(["replay", str(tmp_path / f"traffic-{interval}.jsonl"), "--incidents-jsonl", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "line" in err and "skipped" in err
    one, five = _opened(tmp_path / "incidents-1.0.jsonl"), _opened(tmp_path / "incidents-5.0.jsonl")
    assert one, "the outage must be detected"
    assert one == five
    direct = run_generator(scenario("dependency_down", seed=11, warmup_s=WARMUP_S, rate_scale=RATE), DURATION_S)
    assert sorted((i.id, i.type) for i in direct.incidents) == [(i, t) for i, t, _ in one]
