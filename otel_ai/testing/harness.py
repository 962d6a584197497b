"""Run generated traffic through a Pipeline in pure event time and collect incidents:
the evaluation harness shared by the tests, the demo and anyone tuning detectors; and
run_graph, the same for the service graph alone."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from otel_ai.config import Settings, load_settings
from otel_ai.decode import Decoder
from otel_ai.graph.service_graph import ServiceGraph
from otel_ai.model import Incident
from otel_ai.pipeline import Pipeline
from otel_ai.store import IncidentStore
from otel_ai.subjects import SubjectTable


class RecordingExporter:
    """Keeps a copy of every incident change, in order."""

    def __init__(self) -> None:
        self.changes: list[Incident] = []

    def export(self, incident: Incident) -> None:
        self.changes.append(incident)

    def shutdown(self) -> None:
        pass

    def opened(self) -> list[Incident]:
        return [i for i in self.changes if i.last_change == "opened"]


class RecordingNotifier:
    """A notifier (notifiers/base.py) that keeps every outbox row it is handed, in order."""

    notifies = True

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.sent: list = []  # outbox Entry objects

    def send(self, entry, ref):
        from otel_ai.notifiers.base import Sent

        self.sent.append(entry)
        return Sent(ref or {"seen": True}, created=ref is None)

    def reconcile(self, entry, ref):
        return None

    def shutdown(self) -> None:
        pass

    def messages(self) -> list[dict]:
        """The incident snapshots of the "message" rows it got."""
        return [e.payload["incident"] for e in self.sent if e.kind == "message"]


@dataclass
class RunResult:
    incidents: list[Incident]  # as first opened
    changes: list[Incident]
    spans: int
    pipeline: Pipeline = field(repr=False)


def run_generator(generator, duration_s: float, settings: Settings | None = None,
                  data_dir: str | Path | None = None, interval_s: float = 1.0) -> RunResult:
    """Feed `duration_s` of generated traffic, one export per `interval_s` of event time."""
    settings = settings or load_settings(env={})
    recorder = RecordingExporter()
    with tempfile.TemporaryDirectory(prefix="otel-ai-harness-") as tmp:
        store = IncidentStore(Path(data_dir or tmp) / "incidents.db")
        pipeline = Pipeline(settings, store, [recorder], use_wall_clock=False)
        spans = 0
        for request in generator.serialized_batches(duration_s, interval_s):
            body = request
            spans += pipeline.feed(body).spans
        pipeline.flush()
        store.close()
    return RunResult(recorder.opened(), recorder.changes, spans, pipeline)


def run_scenarios(names, warmup_s: float, after_onset_s: float, seed: int = 7) -> dict[str, tuple]:
    """name -> (generator, RunResult) for preset scenarios whose fault starts at warmup_s."""
    from otel_ai.testing.scenarios import scenario

    results = {}
    for name in names:
        generator = scenario(name, seed=seed, warmup_s=warmup_s)
        results[name] = (generator, run_generator(generator, warmup_s + after_onset_s))
    return results


def wait_for(what: str, check, timeout_s: float = 20.0, every_s: float = 0.1, explain=None):
    """Poll check() until it returns something truthy, and return that; TimeoutError naming
    `what` otherwise, with what explain() says of the state it was stuck in. For tests of
    things that happen on other threads or processes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    detail = f"\n{explain()}" if explain is not None else ""
    raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}{detail}")


@dataclass
class GraphRun:
    graph: ServiceGraph
    subjects: SubjectTable
    last_slot: int  # the newest closed slot
    spans: int
    graph_cpu_s: float  # process CPU spent in the graph (join + stats), not in decode


def run_graph(generator, duration_s: float, slot_s: float = 10.0, lateness_s: float = 5.0, **graph_options) -> GraphRun:
    """Decode generated traffic and build the service graph over it, closing slots on the
    same watermark as the pipeline (largest span end seen minus the allowed lateness)."""
    slot_ns, lateness_ns = int(slot_s * 1e9), int(lateness_s * 1e9)
    subjects = SubjectTable()
    decoder = Decoder(subjects)
    graph = ServiceGraph(slot_ns, subjects, decoder.resources, **graph_options)
    next_slot, spans, cpu, max_end = None, 0, 0.0, 0
    for body in generator.serialized_batches(duration_s):
        batch = decoder.decode(body, None)
        if not len(batch):
            continue
        spans += len(batch)
        max_end = max(max_end, batch.max_end_ns)
        started = time.process_time()
        graph.add(batch)
        if next_slot is None:
            next_slot = int(batch.end_ns.min()) // slot_ns
        while (next_slot + 1) * slot_ns <= max_end - lateness_ns:
            graph.close_slot(next_slot)
            next_slot += 1
        cpu += time.process_time() - started
    return GraphRun(graph, subjects, (next_slot or 0) - 1, spans, cpu)
