"""otel-ai replay: feed recorded OTLP traces (the Collector's file exporter output, JSON or
protobuf, compressed or not; see recordings.py) through the pipeline as fast as it goes,
in pure event time. A progress bar shows spans/s and, for files, an ETA."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from otel_ai.analysis.stage import AnalysisStage
from otel_ai.app import build_analyzer
from otel_ai.config import Settings
from otel_ai.exporters.console import ConsoleExporter
from otel_ai.exporters.jsonl import JsonlExporter
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.consumer import InvalidRequest
from otel_ai.recordings import Recording, RecordingError
from otel_ai.store import IncidentStore

MAX_REPORTED_BAD = 20  # bad records named one by one; the rest are counted


def run_replay(settings: Settings, args) -> int:
    sinks = []
    if args.incidents_jsonl:
        sinks.append(JsonlExporter(args.incidents_jsonl))
    if not args.quiet:
        sinks.append(ConsoleExporter(sys.stderr))
    try:
        recording = Recording.open(args.file)
    except OSError as exc:
        print(f"otel-ai replay: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="otel-ai-replay-") as tmp, recording:
        store = IncidentStore(Path(args.data_dir or tmp) / "incidents.db")
        analyzer = build_analyzer(settings, store)
        analysis = AnalysisStage(analyzer, submit=lambda event: pipeline.submit(event))
        pipeline = Pipeline(settings, store, [analysis, *sinks], analyzer.metrics, use_wall_clock=False)
        started = time.monotonic()
        records = spans = bad = rejected = 0
        progress = _Progress(recording, show=not args.no_progress)
        try:
            for record in recording:
                records += 1
                try:
                    result = pipeline.feed(record.body, encoding=record.encoding)
                except InvalidRequest as exc:
                    bad += 1
                    if bad <= MAX_REPORTED_BAD:
                        progress.write(f"otel-ai replay: {record.where} skipped: {exc}")
                    continue
                rejected += result.rejected_spans
                spans += result.spans
                progress.update(spans)
        except RecordingError as exc:
            progress.write(f"otel-ai replay: {args.file}: {exc}")
            bad += 1
        finally:
            progress.close()
        if not pipeline.flush(timeout_s=settings.analysis.deadline * 2):
            print("otel-ai replay: some analyses did not finish in time", file=sys.stderr)
        elapsed = time.monotonic() - started
        opened = int(sum(s.value for m in pipeline.metrics.incidents.collect() for s in m.samples
                         if s.name.endswith("_total")))
        more = f" ({bad - MAX_REPORTED_BAD} not shown)" if bad > MAX_REPORTED_BAD else ""
        print(f"otel-ai replay: {records} records ({recording.compression} compression), {spans} spans in "
              f"{elapsed:.1f}s ({spans / max(elapsed, 1e-9):,.0f} spans/s); {bad} bad records{more}, "
              f"{rejected} rejected spans; {opened} incidents opened", file=sys.stderr)
        pipeline.stop()
        store.close()
    return 1 if records and bad == records else 0


class _Progress:
    """tqdm over the raw input's bytes (so the ETA is real for compressed files), showing
    spans/s; without a terminal, one plain line every few seconds instead."""

    def __init__(self, recording: Recording, show: bool, every_s: float = 5.0):
        self.recording = recording
        self.every_s = every_s
        self.started = self.last = time.monotonic()
        self.spans = 0
        self.bar = None
        self.plain = show and not sys.stderr.isatty()
        if show and sys.stderr.isatty():
            self.bar = tqdm(total=recording.size, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                            desc="replay", mininterval=0.5, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                            "[{elapsed}<{remaining}{postfix}]")

    def update(self, spans: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        rate = spans / max(now - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(self.recording.position - self.bar.n)
            self.bar.set_postfix_str(f"{spans:,} spans, {rate:,.0f} spans/s", refresh=False)
        elif self.plain and now - self.last >= self.every_s:
            size = self.recording.size
            done = f", {self.recording.position / size:.0%} of the file" if size else ""
            print(f"otel-ai replay: {spans:,} spans, {rate:,.0f} spans/s{done}", file=sys.stderr, flush=True)
        else:
            return
        self.last = now

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.recording.position - self.bar.n)
            self.bar.close()
