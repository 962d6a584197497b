"""otel-ai demo: a real server plus built-in traffic with an injected fault.

Ten minutes of history are sent first (fast, with past timestamps) so the detectors
have baselines, then live traffic follows the wall clock; the fault starts after
--fault-after seconds. Everything goes over real OTLP/gRPC to the real receiver.
"""
from __future__ import annotations

import sys
import tempfile
import time
import json
import textwrap
import urllib.request

import grpc

from otel_ai.analysis.render import format_analysis
from otel_ai.app import App
from otel_ai.config import Settings
from otel_ai.testing.scenarios import SCENARIOS, scenario

HISTORY_S = 600.0
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def run_demo(settings: Settings, args) -> int:
    if args.fault not in SCENARIOS:
        print(f"otel-ai demo: unknown --fault {args.fault!r}; choose one of: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="otel-ai-demo-")
    app = App(settings, data_dir, args.incidents_jsonl)
    ports = app.start()
    print(f"otel-ai demo: OTLP/gRPC :{ports.grpc}  OTLP/HTTP :{ports.http}  admin http://127.0.0.1:{ports.admin}/api/incidents",
          file=sys.stderr, flush=True)
    start_ns = time.time_ns() - int(HISTORY_S * 1e9)
    generator = scenario(args.fault, seed=42, warmup_s=HISTORY_S + args.fault_after, start_ns=start_ns)
    fault = generator.faults[0]
    print(f"otel-ai demo: sending {HISTORY_S / 60:.0f} min of history, then live traffic; "
          f"fault '{fault.kind}' starts in {args.fault_after:.0f}s", file=sys.stderr, flush=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{ports.grpc}")
    export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
    deadline = time.monotonic() + HISTORY_S + args.duration + 60
    sent = 0
    try:
        for body in generator.serialized_batches(HISTORY_S + args.duration):
            wait_s = (generator.now_ns - time.time_ns()) / 1e9
            if wait_s > 0:
                time.sleep(wait_s)  # live part: keep pace with the wall clock
            _send(export, body)
            sent += 1
            if time.monotonic() > deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        channel.close()
    # Let the last slots close (watermark lateness, then the idle wall-clock advance).
    settle = time.monotonic() + 25.0
    while time.monotonic() < settle and not app.store.count():
        time.sleep(0.5)
    app.pipeline.drain(timeout_s=settings.analysis.deadline)
    opened = _summary(ports.admin)
    app.stop()
    print(f"otel-ai demo: {sent} export requests sent; {opened} incident(s) in {data_dir}", file=sys.stderr)
    return 0 if opened else 1


def _send(export, body: bytes) -> None:
    for attempt in range(5):
        try:
            export(body, timeout=10)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.5 * (attempt + 1))


def _summary(admin_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/api/incidents?limit=50", timeout=5) as response:
        incidents = json.load(response)["incidents"]
    for item in incidents:
        top = item["suspects"][0] if item["suspects"] else None
        cause = f" -> top suspect {top['key']}={top['value']} ({top['bad_share']:.0%} of bad vs {top['good_share']:.0%} of good)" if top else ""
        print(f"  {item['type']:<26} {item['summary']}{cause}", file=sys.stderr)
        if item.get("analysis"):
            print(textwrap.indent(format_analysis(item["analysis"]), "      "), file=sys.stderr)
    return len(incidents)
