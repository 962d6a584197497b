"""otel-ai replay: feed OTLP JSON lines (the Collector's file exporter format) through
the pipeline as fast as possible, in pure event time."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from otel_ai.analysis.stage import AnalysisStage
from otel_ai.app import build_analyzer
from otel_ai.config import Settings
from otel_ai.exporters.console import ConsoleExporter
from otel_ai.exporters.jsonl import JsonlExporter
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.consumer import InvalidRequest
from otel_ai.receiver.otlp_json import parse_otlp_json
from otel_ai.store import IncidentStore


def run_replay(settings: Settings, args) -> int:
    sinks = []
    if args.incidents_jsonl:
        sinks.append(JsonlExporter(args.incidents_jsonl))
    if not args.quiet:
        sinks.append(ConsoleExporter(sys.stderr))
    with tempfile.TemporaryDirectory(prefix="otel-ai-replay-") as tmp:
        store = IncidentStore(Path(args.data_dir or tmp) / "incidents.db")
        analyzer = build_analyzer(settings, store)
        analysis = AnalysisStage(analyzer, submit=lambda event: pipeline.submit(event))
        pipeline = Pipeline(settings, store, [analysis, *sinks], analyzer.metrics, use_wall_clock=False)
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8", errors="replace")
        started = time.monotonic()
        last_report = started
        lines = spans = bad_lines = rejected = 0
        with stream:
            for lineno, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                lines += 1
                try:
                    body = parse_otlp_json(line.encode("utf-8")).SerializeToString()
                    result = pipeline.feed(body)
                except (ValueError, InvalidRequest) as exc:
                    bad_lines += 1
                    print(f"otel-ai replay: line {lineno} skipped: {exc}", file=sys.stderr)
                    continue
                rejected += result.rejected_spans
                spans += result.spans
                now = time.monotonic()
                if now - last_report >= 2.0:
                    last_report = now
                    print(f"otel-ai replay: {lines} lines, {spans} spans, {spans / (now - started):,.0f} spans/s",
                          file=sys.stderr, flush=True)
        if not pipeline.flush(timeout_s=settings.analysis.deadline * 2):
            print("otel-ai replay: some analyses did not finish in time", file=sys.stderr)
        elapsed = time.monotonic() - started
        opened = int(sum(s.value for m in pipeline.metrics.incidents.collect() for s in m.samples
                         if s.name.endswith("_total")))
        print(f"otel-ai replay: {lines} lines, {spans} spans in {elapsed:.1f}s "
              f"({spans / max(elapsed, 1e-9):,.0f} spans/s); {bad_lines} bad lines, {rejected} rejected spans; "
              f"{opened} incidents opened", file=sys.stderr)
        pipeline.stop()
        store.close()
    return 1 if lines and bad_lines == lines else 0
