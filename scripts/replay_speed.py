"""Replay speed on a Collector-style recording: 1M spans of OTLP/JSON lines, gzipped.

    python scripts/replay_speed.py [--spans 1000000] [--keep traffic.jsonl.gz]

Writes the generator's realistic traffic (several services, client spans, exception
events, ~512 spans per line) as the Collector's file exporter writes it (one OTLP/JSON
request per line), gzips it, then runs `otel-ai replay` on it and prints the figure.
"""
from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.receiver.otlp_json import to_otlp_json

SPANS_PER_LINE = 512


def _line(body: bytes) -> bytes:
    return to_otlp_json(ExportTraceServiceRequest.FromString(body)).encode() + b"\n"


def write_recording(path: Path, spans: int) -> int:
    from otel_ai.testing import topology as topo
    from otel_ai.testing.traffic import Noise, TrafficGenerator

    noise = [Noise("steady_flaky", route=rid, params={"rate": 0.1}) for rid in topo.ROUTE_BY_ID]
    probe = sum(len(ss.spans) for r in TrafficGenerator(seed=3, noise=noise).batches(20.0, 1.0)
                for rs in r.resource_spans for ss in rs.scope_spans) / 20.0
    generator = TrafficGenerator(seed=3, noise=noise, rate_scale=SPANS_PER_LINE / probe)
    written = 0
    with gzip.open(path, "wb", compresslevel=6) as out, ProcessPoolExecutor(2) as pool:
        bodies = []
        for body in generator.serialized_batches(10 * spans / SPANS_PER_LINE, 1.0):
            bodies.append(body)
            written += sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                           for ss in rs.scope_spans)
            if written >= spans:
                break
        for line in pool.map(_line, bodies, chunksize=16):
            out.write(line)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="PATH", help="write the recording here and keep it")
    args = parser.parse_args(argv)
    path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="otel-ai-replay-")) / "traffic.jsonl.gz"
    started = time.monotonic()
    written = write_recording(path, args.spans)
    print(f"replay_speed: wrote {written:,} spans to {path} ({path.stat().st_size / 2**20:.1f} MiB gzipped) "
          f"in {time.monotonic() - started:.0f} s", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "otel_ai", "replay", str(path), "--quiet", "--no-progress"],
                          capture_output=True, text=True)
    summary = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "(no output)"
    print(summary)
    if not args.keep:
        path.unlink()
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
