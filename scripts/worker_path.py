"""The pipeline's own path on one thread, without gRPC: decode (captures deferred), pick the
captures, merge, process, as the worker does, over `otel-ai bench`'s traffic re-timed to a
steady rate of event time. Prints the CPU per row and, every tenth of the run, RSS and the
state that fills to its caps (the service graph's join, the capture store).

    python scripts/worker_path.py [--spans 600000] [--routes 0] [--rate 300000] [--profile]

Quieter than `otel-ai bench` (no client process, no thread hand-overs), so it is the one to
compare two versions of the per-span work with; `bench` remains the figure an operator sees.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=600_000)
    parser.add_argument("--routes", type=int, default=0, help="spread SERVER spans over this many routes, as bench")
    parser.add_argument("--rate", type=int, default=300_000, help="spans per second of event time")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed part (cumulative, top 40)")
    args = parser.parse_args(argv)

    from otel_ai.bench import build_batches
    from otel_ai.bench_client import _Batch
    from otel_ai.config import load_settings
    from otel_ai.decode.columns import merge_batches
    from otel_ai.pipeline import MERGE_SPANS, Pipeline
    from otel_ai.runtime import tune_for_ingestion
    from otel_ai.store import IncidentStore

    batches = [_Batch(b) for b in build_batches(512, routes=args.routes)]
    clock = [time.time_ns()]
    env = {"AI_EVENTS_ENABLED": "false"} if args.routes else {}
    pipeline = Pipeline(load_settings(env=env), IncidentStore(os.path.join(tempfile.mkdtemp(), "store.db")),
                        wall_clock_ns=lambda: clock[0])
    tune_for_ingestion()
    report_every, warm_spans = max(1, args.spans // 10), args.spans // 5
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
    pending, pending_rows, rows, spans, next_report, cpu = [], 0, 0, 0, 0, 0.0
    while spans < args.spans:
        for source in batches:
            # Re-timed outside the clock: the protobuf work of re-timing is not the pipeline's.
            clock[0] += int(source.span_count / args.rate * 1e9)
            body = source.payload(clock[0])
            timed = spans >= warm_spans
            if timed and profiler is not None:
                profiler.enable()
            started = time.process_time()
            batch = pipeline.decode(body)
            pending.append(batch)
            pending_rows += len(batch)
            if pending_rows >= MERGE_SPANS:
                merged = merge_batches(pending)
                pipeline._pick_captures(pending, merged)
                pipeline.process(merged)
                pending, pending_rows = [], 0
            if timed:
                cpu += time.process_time() - started
                rows += len(batch)
                if profiler is not None:
                    profiler.disable()
            spans += source.span_count
            if spans >= next_report and profiler is None:
                next_report += report_every
                graph = pipeline.graph
                print(f"{spans:>10,} spans  RSS {_rss_mib():6.1f} MiB  graph {graph.nbytes() / 2**20:5.1f} MiB "
                      f"(join {len(graph.join):,} rows)  captures {pipeline.captures.captures:,}", flush=True)
            if spans >= args.spans:
                break
    if profiler is not None:
        import pstats
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(40)
    print(f"worker path: {cpu / max(rows, 1) * 1e6:.3f} µs of CPU per row over {rows:,} rows "
          f"(after the first fifth of {spans:,} spans)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
