"""otel-ai check: the seed's verification checklist, for this deployment."""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from otel_ai.config import ConfigError, load_settings

OK, WARN, FAIL = "✅", "⚠️ ", "❌"


def run_check(args) -> int:
    failures = 0
    out = sys.stdout

    def line(mark: str, text: str) -> None:
        nonlocal failures
        failures += mark == FAIL
        print(f"{mark} {text}", file=out)

    print("Configuration", file=out)
    env_file = Path.cwd() / ".env"
    if env_file.exists():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)
        line(OK, f".env loaded from {env_file}")
    try:
        settings = load_settings(args.config)
        line(OK, f"config valid ({args.config or 'embedded defaults'}); mode={settings.mode}")
    except ConfigError as exc:
        line(FAIL, str(exc))
        return 1
    line(OK if settings.enabled else WARN, f"AI events {'enabled' if settings.enabled else 'DISABLED (AI_EVENTS_ENABLED=false)'}")
    line(OK, f"minimum confidence {settings.min_confidence:.2f}; budget ${settings.budget.max_cost_per_day:.2f}/day")
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    line(OK if key else WARN, "ANTHROPIC_API_KEY found" if key else "ANTHROPIC_API_KEY not set: incidents are recorded without Claude analysis")
    slack = os.environ.get("SLACK_BOT_TOKEN", "")
    line(OK if slack else WARN, "SLACK_BOT_TOKEN found" if slack else "Slack not configured (optional)")

    print("\nEvent detection", file=out)
    for event_type, rule in settings.events.items():
        mark = OK if rule.enabled else WARN
        line(mark, f"{event_type}: threshold {rule.threshold:g}, window {rule.window:g}s, minSamples {rule.min_samples}, "
                   f"{rule.severity}{'' if rule.enabled else ' (disabled)'}")
    line(*_pipeline_self_test(settings))

    print("\nStorage and ports", file=out)
    data_dir = Path(args.data_dir)
    try:
        from otel_ai.store import IncidentStore

        store = IncidentStore(data_dir / "incidents.db")
        line(OK, f"incident store {data_dir / 'incidents.db'}: {store.count()} incidents, {store.count('open')} open")
        store.close()
    except Exception as exc:  # any store failure is the finding itself
        line(FAIL, f"incident store at {data_dir}: {exc}")
    r = settings.receiver
    for name, port in (("OTLP/gRPC", r.grpc_port), ("OTLP/HTTP", r.http_port), ("admin", settings.admin.port)):
        line(*_port_free(name, r.host if name != "admin" else settings.admin.host, port))
    print(f"\n{'All checks passed' if not failures else f'{failures} check(s) failed'}", file=out)
    return 1 if failures else 0


def _port_free(name: str, host: str, port: int) -> tuple[str, str]:
    if port == 0:
        return OK, f"{name}: a free port will be picked"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return WARN, f"{name} port {host}:{port} is in use ({exc.strerror}); is otel-ai already running?"
    return OK, f"{name} port {host}:{port} is free"


def _pipeline_self_test(settings) -> tuple[str, str]:
    """Decode one synthetic error spike through a throwaway pipeline."""
    from otel_ai.pipeline import Pipeline
    from otel_ai.store import IncidentStore
    from otel_ai.testing.harness import RecordingExporter
    from otel_ai.testing.scenarios import scenario

    with tempfile.TemporaryDirectory() as tmp:
        recorder = RecordingExporter()
        store = IncidentStore(Path(tmp) / "check.db")
        pipeline = Pipeline(settings, store, [recorder], use_wall_clock=False)
        started = time.monotonic()
        generator = scenario("dependency_down", seed=5, warmup_s=360)
        for body in generator.serialized_batches(420):
            pipeline.feed(body)
        pipeline.flush()
        store.close()
    took = time.monotonic() - started
    if recorder.opened():
        first = recorder.opened()[0]
        return OK, f"self-test: injected fault detected as {first.type} ({first.summary}) in {took:.1f}s"
    return FAIL, "self-test: an injected dependency outage was NOT detected"
