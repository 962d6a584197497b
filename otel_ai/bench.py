"""``otel-ai bench``: drive a real in-process otel-ai over OTLP/gRPC and measure it.

This process is the server (an ``App`` on ephemeral localhost ports); the load comes
from ``otel_ai.bench_client`` processes so that client CPU never counts as server
CPU. Reported: throughput, server CPU per span end to end (gRPC + decode + windows +
detection) next to the bare protobuf parse floor, Export latency percentiles, RSS (peak
and growth over the run) and what the server rejected.

``--baseline`` first sends the same traffic to a minimal receiver in the same process
setup (the same gRPC receiver, whose consumer only parses each request with protobuf
and counts spans per route in a Python loop) and prints otel-ai's CPU per span as a
ratio of it, a figure that compares across machines.

The traffic is the generator's shop: several services, deep call chains with client
spans, every route failing 10 % of its requests (about 5 % of all spans are errors,
most with an exception event), ~512 spans per request.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.bench_client import write_batches
from otel_ai.decode import describe as describe_decoder
from otel_ai.receiver.consumer import PROTOBUF, ExportResult

TARGET_BATCHES = 150
ROUTE_FAILURE_SHARE = 0.1  # every route fails this share of its requests (~5 % of all spans)
_MiB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to send in total (default 1000000)")
    parser.add_argument("--batch-spans", type=int, default=512, help="spans per Export request (default 512)")
    parser.add_argument("--clients", type=int, default=1, help="client processes (default 1)")
    parser.add_argument("--in-flight", type=int, default=2, help="requests in flight per client (default 2)")
    parser.add_argument("--baseline", action="store_true",
                        help="first run a minimal receiver (protobuf parse + per-route count in Python) on the "
                             "same traffic, and print otel-ai's CPU per span as a ratio of it")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure this many times, a fresh server each (with --baseline, the two "
                             "alternate) and report the medians: single runs vary 10-30 %% on a shared machine")
    parser.add_argument("--routes", type=int, default=0,
                        help="spread SERVER spans over this many distinct http.route values (memory under "
                             "cardinality; default: the generator's ~30 routes)")
    parser.add_argument("--http", action="store_true",
                        help="send OTLP/HTTP protobuf (one keep-alive connection per request in flight) "
                             "instead of OTLP/gRPC")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--config", metavar="PATH", default=None, help="otel-ai config file for the server")
    parser.add_argument("--metrics", action="store_true",
                        help="measure the metrics path instead: request-duration histograms (cumulative, as SDKs "
                             "send them) through the pipeline in this process; data points/s and CPU per point")
    parser.add_argument("--streams", type=int, default=20_000,
                        help="--metrics: distinct histogram streams (route x status x pod; default 20000)")
    parser.add_argument("--rounds", type=int, default=6, help="--metrics: exports of every stream, 10 s apart "
                                                              "(default 6)")
    parser.add_argument("--exponential", action="store_true", help="--metrics: exponential instead of "
                                                                   "explicit-bucket histograms")


# --------------------------------------------------------------------------- batches

def build_batches(batch_spans: int, target_batches: int = TARGET_BATCHES, seed: int = 7, routes: int = 0) -> list[bytes]:
    """Realistic requests of ~batch_spans spans, re-chunked from simulated traffic.

    Spans keep their resource and scope; within one request, spans of the same
    resource+scope share one ResourceSpans/ScopeSpans, as an SDK or Collector sends.
    """
    from otel_ai.testing.topology import ROUTE_BY_ID
    from otel_ai.testing.traffic import Noise, TrafficGenerator

    noise = [Noise("steady_flaky", route=rid, params={"rate": ROUTE_FAILURE_SHARE}) for rid in ROUTE_BY_ID]
    want = batch_spans * target_batches
    duration_s = 180.0
    probe = TrafficGenerator(seed=seed, noise=noise)
    probe_spans = sum(_count(r) for r in probe.batches(10.0, 1.0))
    rate_scale = max(0.05, want / max(1.0, probe_spans / 10.0) / duration_s * 1.05)
    gen = TrafficGenerator(seed=seed, noise=noise, rate_scale=rate_scale)

    out: list[bytes] = []
    cur = ExportTraceServiceRequest()
    groups: dict[bytes, object] = {}
    n = 0

    def emit() -> None:
        nonlocal cur, groups, n
        if n:
            out.append(cur.SerializeToString())
        cur, groups, n = ExportTraceServiceRequest(), {}, 0

    for req in gen.batches(duration_s * 2, 1.0):
        for rs in req.resource_spans:
            rkey = rs.resource.SerializeToString(deterministic=True)
            for ss in rs.scope_spans:
                key = rkey + b"\0" + ss.scope.SerializeToString(deterministic=True)
                spans = list(ss.spans)
                pos = 0
                while pos < len(spans):
                    target = groups.get(key)
                    if target is None:
                        new_rs = cur.resource_spans.add()
                        new_rs.resource.CopyFrom(rs.resource)
                        new_rs.schema_url = rs.schema_url
                        target = new_rs.scope_spans.add()
                        target.scope.CopyFrom(ss.scope)
                        target.schema_url = ss.schema_url
                        groups[key] = target
                    take = spans[pos:pos + batch_spans - n]
                    target.spans.extend(take)
                    pos += len(take)
                    n += len(take)
                    if n >= batch_spans:
                        emit()
        if len(out) >= target_batches:
            break
    emit()
    out = out[:target_batches]
    return [_spread_routes(blob, routes) for blob in out] if routes else out


def _spread_routes(blob: bytes, routes: int) -> bytes:
    """Suffix each http.route so that SERVER spans cover about `routes` distinct routes."""
    request = ExportTraceServiceRequest.FromString(blob)
    per_route = max(1, routes // 30)  # the generator has ~30 HTTP routes
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                for attribute in span.attributes:
                    if attribute.key == "http.route":
                        variant = int.from_bytes(span.span_id[:4] or b"\0", "little") % per_route
                        attribute.value.string_value += f"/v{variant}"
    return request.SerializeToString()


def _count(req: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def parse_floor_us(blobs: list[bytes], min_cpu_s: float = 0.3) -> float:
    """CPU µs per span to parse the requests with the generated protobuf classes."""
    spans = sum(_count(ExportTraceServiceRequest.FromString(b)) for b in blobs)
    total_spans = 0
    t0 = time.process_time()
    while True:
        for b in blobs:
            ExportTraceServiceRequest.FromString(b)
        total_spans += spans
        cpu = time.process_time() - t0
        if cpu >= min_cpu_s:
            return cpu / total_spans * 1e6


class RouteCounter:
    """The baseline's consumer: what any Python OTLP receiver does at the least. It parses
    each request with protobuf and counts spans per route (http.route, else the span name)
    in a Python loop."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.spans = 0
        self._lock = threading.Lock()

    def consume(self, body: bytes, transport: str, encoding: str = PROTOBUF) -> ExportResult:
        request = ExportTraceServiceRequest.FromString(body)
        spans = 0
        with self._lock:
            counts = self.counts
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        route = span.name
                        for attribute in span.attributes:
                            if attribute.key == "http.route":
                                route = attribute.value.string_value
                                break
                        counts[route] = counts.get(route, 0) + 1
                        spans += 1
            self.spans += spans
        return ExportResult(0, "", spans)


# --------------------------------------------------------------------------- measurement helpers

def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _RssSampler(threading.Thread):
    def __init__(self, period_s: float = 0.25):
        super().__init__(name="bench-rss", daemon=True)
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), _rss_bytes()))
            if self._stop_event.wait(self.period_s):
                self.samples.append((time.monotonic(), _rss_bytes()))
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def at(self, t: float) -> int:
        best = min(self.samples, key=lambda s: abs(s[0] - t))
        return best[1]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def _samples(registry, name: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


# --------------------------------------------------------------------------- run

def _start_clients(args, port: int, batch_file: Path, n_batches: int) -> list[subprocess.Popen]:
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    share, extra = divmod(args.spans, args.clients)
    procs = []
    for c in range(args.clients):
        cmd = [sys.executable, "-m", "otel_ai.bench_client", "--target", f"127.0.0.1:{port}",
               "--batches", str(batch_file), "--spans", str(share + (1 if c < extra else 0)),
               "--in-flight", str(args.in_flight), "--offset", str(c * n_batches // args.clients)]
        if args.http:
            cmd.append("--http")
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True))
    return procs


@dataclass
class _Phase:
    """One measured run: server CPU and wall time from GO until everything is processed."""

    cpu_s: float
    wall_s: float
    results: list[dict]
    sampler: _RssSampler
    started: float
    clients_done: float


def _drive(args, port: int, batch_file: Path, n_batches: int, say, received, settled) -> _Phase:
    """Start the clients, let them send, wait until `settled()`; `received()` is progress."""
    procs = _start_clients(args, port, batch_file, n_batches)
    sampler = None
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"bench client did not start (exit code {p.poll()})")
        sampler = _RssSampler()
        sampler.start()
        wall0 = time.monotonic()
        cpu0 = time.process_time()
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        # Read each client's result while it runs: a large result fills the pipe, and a
        # client blocked on a full pipe never exits.
        outputs = [""] * len(procs)

        def collect(index: int, proc) -> None:
            outputs[index] = proc.stdout.read()

        readers = [threading.Thread(target=collect, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for reader in readers:
            reader.start()
        last_t, last_n = wall0, 0.0
        while any(reader.is_alive() for reader in readers):
            time.sleep(0.1)
            now = time.monotonic()
            if now - last_t >= 2.0:
                n = received()
                say(f"{n:,.0f} spans received, {(n - last_n) / (now - last_t):,.0f} spans/s")
                last_t, last_n = now, n
        for p in procs:
            p.wait()
        clients_done = time.monotonic()
        deadline = time.monotonic() + 120
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.005)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        sampler.stop()
        results = []
        for p, out in zip(procs, outputs):
            if p.returncode != 0:
                raise RuntimeError(f"bench client failed with exit code {p.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return _Phase(cpu, wall, results, sampler, wall0, clients_done)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sampler is not None and sampler.is_alive():
            sampler.stop()


def _transport(args) -> str:
    return "OTLP/HTTP protobuf" if args.http else "OTLP/gRPC"


def _baseline(args, settings, batch_file: Path, n_batches: int, say) -> float:
    """CPU µs per span of the minimal receiver on the same traffic and transport."""
    from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
    from otel_ai.receiver.http_server import OtlpHttpReceiver
    from otel_ai.selfmetrics import SelfMetrics

    counter = RouteCounter()
    receiver_type = OtlpHttpReceiver if args.http else OtlpGrpcReceiver
    receiver = receiver_type(counter, SelfMetrics(), host="127.0.0.1", port=0,
                             max_request_bytes=settings.receiver.max_request_bytes)
    port = receiver.start()
    try:
        say(f"baseline: sending {args.spans} spans over {_transport(args)} to a minimal receiver "
            "(parse + per-route count in Python)")
        phase = _drive(args, port, batch_file, n_batches, say, lambda: counter.spans, lambda: True)
    finally:
        receiver.stop()
    if counter.spans != sum(r["spans_sent"] for r in phase.results):
        raise RuntimeError("the baseline receiver lost spans")
    return phase.cpu_s / counter.spans * 1e6


def run_metrics(args) -> int:
    """`otel-ai bench --metrics`: points/s and CPU µs per data point of the metrics path."""
    from otel_ai.metrics.bench import measure_metrics

    if args.streams <= 0 or args.rounds <= 0:
        print("bench: --streams and --rounds must be positive", file=sys.stderr)
        return 2
    print(f"bench: {args.rounds} exports of {args.streams} cumulative "
          f"{'exponential' if args.exponential else 'explicit-bucket'} histogram streams", file=sys.stderr, flush=True)
    result = measure_metrics(args.streams, args.rounds, args.exponential)
    report = {"data_points": result.data_points, "streams": result.streams, "wall_s": round(result.wall_s, 3),
              "data_points_per_s": round(result.data_points_per_s), "cpu_us_per_data_point":
              round(result.cpu_us_per_data_point, 2), "histograms": "exponential" if args.exponential else "explicit"}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"metrics path: {result.data_points} data points in {result.wall_s:.2f} s: "
              f"{result.data_points_per_s:,.0f} data points/s, {result.cpu_us_per_data_point:.1f} µs CPU per data "
              f"point ({result.streams} streams with delta state; parse, decode, re-bin, cumulative -> delta, "
              "windows and detectors, one process)")
    return 0


def run(args) -> int:
    from otel_ai.config import ConfigError, load_settings

    if args.metrics:
        return run_metrics(args)

    if (args.spans <= 0 or args.batch_spans <= 0 or args.clients <= 0 or args.in_flight <= 0 or args.repeat <= 0
            or args.routes < 0):
        print("bench: --spans, --batch-spans, --clients, --in-flight and --repeat must be positive, --routes not "
              "negative", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    settings.receiver.host = "127.0.0.1"
    settings.receiver.grpc_port = 0
    settings.receiver.http_port = 0
    settings.admin.host = "127.0.0.1"
    settings.admin.port = 0

    def say(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="otel-ai-bench-"))
    try:
        say(f"building ~{TARGET_BATCHES} batches of {args.batch_spans} spans")
        blobs = build_batches(args.batch_spans, routes=args.routes)
        batch_file = tmp / "batches.bin"
        write_batches(batch_file, blobs)
        floor = parse_floor_us(blobs)
        reports, problems = [], []
        for attempt in range(args.repeat):
            if args.repeat > 1:
                say(f"run {attempt + 1} of {args.repeat}")
            baseline = _baseline(args, settings, batch_file, len(blobs), say) if args.baseline else None
            report, problems = _measure(args, settings, tmp / f"data-{attempt}", batch_file, blobs, floor, baseline, say)
            # A stopped App sits in reference cycles, and ingestion's tuning makes the cyclic
            # collector rare: without this, a run's 100+ MiB of columns lingered into the next
            # run's RSS (--repeat 4: 542 MiB at 10 % of the last run, 242 with it).
            gc.collect()
            reports.append(report)
            if problems:
                break
        report = _with_medians(reports)
        if args.json:
            print(json.dumps(report))
        else:
            print(_table(report))
        for p in problems:
            say(f"FAILED: {p}")
        return 1 if problems else 0
    except Exception as exc:  # a clear message rather than a traceback for the CLI
        say(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args, settings, data_dir: Path, batch_file: Path, blobs: list[bytes], floor: float,
             baseline: float | None, say) -> tuple[dict, list[str]]:
    """One run of a fresh otel-ai: its report and what went wrong (nothing, normally)."""
    from otel_ai.app import App, Credentials

    app = App(settings, data_dir, console=False, credentials=Credentials())  # no keys: measure ingestion
    try:
        ports = app.start()
        reg = app.metrics.registry

        def received() -> float:
            return sum(_samples(reg, "otel_ai_spans_received_total").values())

        def accepted_requests() -> float:
            return sum(v for k, v in _samples(reg, "otel_ai_export_requests_total").items()
                       if dict(k).get("outcome") in ("ok", "partial"))

        def settled() -> bool:
            return app.pipeline.queue_depth() == 0 and app.pipeline.batches_processed >= accepted_requests()

        say(f"sending {args.spans} spans over {_transport(args)} with {args.clients} client(s), "
            f"{args.in_flight} in flight each")
        phase = _drive(args, ports.http if args.http else ports.grpc, batch_file, len(blobs), say, received, settled)
        results, sampler = phase.results, phase.sampler
        spans_sent = sum(r["spans_sent"] for r in results)
        spans_received = received()
        latencies = sorted(x for r in results for x in r["latencies_s"])
        rejected = {dict(k).get("reason"): v for k, v in _samples(reg, "otel_ai_spans_rejected_total").items()}
        dropped = {dict(k).get("reason"): v for k, v in _samples(reg, "otel_ai_spans_dropped_total").items()}
        server_errors = sum(v for k, v in _samples(reg, "otel_ai_export_requests_total").items()
                            if dict(k).get("outcome") in ("error", "invalid", "too_large", "unauthenticated"))
        incidents = sum(_samples(reg, "otel_ai_incidents_opened_total").values())
        rss_10 = sampler.at(phase.started + 0.1 * (phase.clients_done - phase.started))
        rss_end = sampler.samples[-1][1]
        rss_peak = max(s[1] for s in sampler.samples)
        cpu_us = phase.cpu_s / spans_received * 1e6 if spans_received else 0.0
        report = {
            "transport": "http" if args.http else "grpc",
            "spans_sent": spans_sent,
            "spans_received": int(spans_received),
            "batches": len(blobs),
            "batch_spans": args.batch_spans,
            "clients": args.clients,
            "in_flight": args.in_flight,
            "wall_s": round(phase.wall_s, 3),
            "spans_per_s": round(spans_received / phase.wall_s, 1) if phase.wall_s > 0 else 0.0,
            "server_cpu_s": round(phase.cpu_s, 3),
            "cpu_us_per_span": round(cpu_us, 3),
            "parse_floor_us_per_span": round(floor, 3),
            "cpu_over_floor": round(cpu_us / floor, 2) if floor > 0 else None,
            "baseline_cpu_us_per_span": round(baseline, 3) if baseline else None,
            "cpu_over_baseline": round(cpu_us / baseline, 3) if baseline else None,
            "decoder": describe_decoder(),
            "subjects": len(app.pipeline.subjects),
            "export_p50_ms": round(_percentile(latencies, 0.50) * 1e3, 3),
            "export_p99_ms": round(_percentile(latencies, 0.99) * 1e3, 3),
            "export_max_ms": round((latencies[-1] if latencies else 0.0) * 1e3, 3),
            "requests": len(latencies),
            "rss_10pct_mib": round(rss_10 / _MiB, 1),
            "rss_end_mib": round(rss_end / _MiB, 1),
            "rss_peak_mib": round(rss_peak / _MiB, 1),
            "rss_growth_mib": round((rss_end - rss_10) / _MiB, 1),
            "rss_growth_pct": round((rss_end - rss_10) / rss_10 * 100, 1) if rss_10 else None,
            "retries": sum(r["retries"] for r in results),
            "client_errors": sum(r["errors"] for r in results),
            "rejected_spans": int(sum(rejected.values())),
            "rejected_by_reason": {k: int(v) for k, v in rejected.items()},
            "dropped_spans": {k: int(v) for k, v in dropped.items()},
            "server_errors": int(server_errors),
            "incidents_opened": int(incidents),
        }
        problems = []
        if spans_received <= 0:
            problems.append("no spans arrived at the server")
        if server_errors:
            problems.append(f"the server answered {int(server_errors)} request(s) with an error")
        if report["client_errors"]:
            msgs = "; ".join(m for r in results for m in r["error_messages"])
            problems.append(f"{report['client_errors']} request(s) failed: {msgs}")
        if spans_received != spans_sent:
            problems.append(f"spans sent ({spans_sent}) != spans received ({int(spans_received)})")
        return report, problems
    finally:
        app.stop()


# Reported as the median of the runs (with every run's value) when --repeat asks for several.
_REPEATED = ("cpu_us_per_span", "baseline_cpu_us_per_span", "cpu_over_baseline", "spans_per_s",
             "export_p50_ms", "export_p99_ms")


def _with_medians(reports: list[dict]) -> dict:
    """The last run's report; with several runs, the _REPEATED figures are their medians
    (the ratio the median of each run's own ratio) and `runs` lists every run's."""
    report = dict(reports[-1])
    if len(reports) == 1:
        return report
    report["runs"] = [{key: r[key] for key in _REPEATED} for r in reports]
    for key in _REPEATED:
        values = [r[key] for r in reports if r[key] is not None]
        if values:
            report[key] = round(statistics.median(values), 3)
    if report["parse_floor_us_per_span"]:
        report["cpu_over_floor"] = round(report["cpu_us_per_span"] / report["parse_floor_us_per_span"], 2)
    return report


def _table(r: dict) -> str:
    rej = ", ".join(f"{k}={v}" for k, v in sorted(r["rejected_by_reason"].items())) or "-"
    drop = ", ".join(f"{k}={v}" for k, v in sorted(r["dropped_spans"].items())) or "-"
    rows = [
        ("spans sent / received", f"{r['spans_sent']:,} / {r['spans_received']:,}"),
        ("batches x spans, clients x in-flight",
         f"{r['batches']} x {r['batch_spans']}, {r['clients']} x {r['in_flight']}"),
        ("wall seconds", f"{r['wall_s']:.2f}"),
        ("spans/s", f"{r['spans_per_s']:,.0f}"),
        ("server CPU µs/span", f"{r['cpu_us_per_span']:.2f}"),
        ("parse floor µs/span", f"{r['parse_floor_us_per_span']:.2f}"),
        ("ratio CPU/floor", f"{r['cpu_over_floor']}"),
        ("minimal receiver CPU µs/span", "-" if r["baseline_cpu_us_per_span"] is None
         else f"{r['baseline_cpu_us_per_span']:.2f} (parse + per-route count in Python)"),
        ("ratio CPU/minimal receiver", "-" if r["cpu_over_baseline"] is None else f"{r['cpu_over_baseline']:.2f}"),
        ("decoder, subjects", f"{r['decoder']}, {r['subjects']}"),
        ("Export p50 / p99 / max ms",
         f"{r['export_p50_ms']:.2f} / {r['export_p99_ms']:.2f} / {r['export_max_ms']:.2f}"),
        ("RSS at 10% / end / peak MiB", f"{r['rss_10pct_mib']} / {r['rss_end_mib']} / {r['rss_peak_mib']}"),
        ("RSS growth (10% -> end)", f"{r['rss_growth_mib']:+.1f} MiB ({r['rss_growth_pct']:+.1f} %)"),
        ("retries", f"{r['retries']}"),
        ("rejected spans", f"{r['rejected_spans']} ({rej})"),
        ("dropped spans", drop),
        ("server errors / client errors", f"{r['server_errors']} / {r['client_errors']}"),
        ("incidents opened", f"{r['incidents_opened']}"),
    ]
    if "runs" in r:
        def spread(key: str) -> str:
            values = [run[key] for run in r["runs"] if run[key] is not None]
            return f"{min(values):.2f} - {max(values):.2f}" if values else "-"
        rows.insert(0, ("runs", f"{len(r['runs'])}: CPU, ratios, spans/s and Export figures are their medians"))
        rows += [(f"  {label} over the runs", spread(key)) for label, key in (
            ("server CPU µs/span", "cpu_us_per_span"), ("minimal receiver CPU µs/span", "baseline_cpu_us_per_span"),
            ("ratio CPU/minimal receiver", "cpu_over_baseline"), ("Export p99 ms", "export_p99_ms"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
