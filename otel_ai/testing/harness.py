"""Run generated traffic through a Pipeline in pure event time and collect incidents:
the evaluation harness shared by the tests, the demo and anyone tuning detectors."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from otel_ai.config import Settings, load_settings
from otel_ai.model import Incident
from otel_ai.pipeline import Pipeline
from otel_ai.store import IncidentStore


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
                  data_dir: str | Path | None = None) -> RunResult:
    settings = settings or load_settings(env={})
    recorder = RecordingExporter()
    with tempfile.TemporaryDirectory(prefix="otel-ai-harness-") as tmp:
        store = IncidentStore(Path(data_dir or tmp) / "incidents.db")
        pipeline = Pipeline(settings, store, [recorder], use_wall_clock=False)
        spans = 0
        for request in generator.serialized_batches(duration_s):
            body = request
            spans += pipeline.feed(body).spans
        pipeline.flush()
        store.close()
    return RunResult(recorder.opened(), recorder.changes, spans, pipeline)


def wait_for(what: str, check, timeout_s: float = 20.0, every_s: float = 0.1):
    """Poll check() until it returns something truthy, and return that; TimeoutError naming
    `what` otherwise. For tests of things that happen on other threads or processes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
