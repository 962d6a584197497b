"""A real `otel-ai serve` killed with SIGKILL in the middle of bursty benign traffic and
started again on the same data dir: the baselines it had learnt come back from the
store, the bursts it knew raise nothing, and a fault a minute after the restart is
caught within 30 s of event time.

Event time runs ahead of the wall clock here: the traffic starts 50 minutes ago (within
windows.maxSpanAge) and is sent as fast as the server takes it, at a tenth of the deep
topology's rate."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from otel_ai.testing.harness import wait_for
from otel_ai.testing.scenarios import deep_background_noise
from otel_ai.testing.traffic import Fault, Noise, TrafficGenerator

NS = 1_000_000_000
OTEL_AI = [sys.executable, "-m", "otel_ai"]
RESTART_S, FAULT_S, AFTER_FAULT_S = 40 * 60.0, 41 * 60.0, 60.0
_CREDENTIALS = ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY", "AI_MODE")  # offline analysis, no notifiers
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def serve(root: Path, log_name: str) -> tuple[subprocess.Popen, Path]:
    log_path = root / log_name
    with open(log_path, "w") as log:
        process = subprocess.Popen([*OTEL_AI, "serve", "--config", str(root / "otel-ai.yaml"),
                                    "--data-dir", str(root / "data"), "--grpc-port", "0", "--http-port", "0",
                                    "--admin-port", "0"], stdout=log, stderr=subprocess.STDOUT,
                                   env={**{k: v for k, v in os.environ.items() if k not in _CREDENTIALS},
                                        "NO_PROXY": "127.0.0.1,localhost"})
    return process, log_path


def http_port(process: subprocess.Popen, log_path: Path) -> int:
    def listening() -> str | None:
        assert process.poll() is None, log_path.read_text()
        return next((line for line in log_path.read_text().splitlines() if "otel-ai listening" in line), None)
    line = wait_for("the listening line", listening, timeout_s=60)
    return int(line.split("OTLP/HTTP :")[1].split()[0].split("/")[0])


def send(port: int, generator, seconds: float) -> None:
    """POST `seconds` of the generator's traffic, waiting out a saturated queue."""
    for body in generator.serialized_batches(seconds, interval_s=5.0):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
        for _ in range(100):
            try:
                with _OPENER.open(request, timeout=10) as response:
                    response.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503):
                    raise
                time.sleep(0.1)


def opened(db: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT type, service, route, opened_at_ns FROM incidents ORDER BY opened_at_ns").fetchall()


def test_kill_9_and_restart_keep_the_baselines_raise_nothing_and_catch_a_fault(tmp_path):
    (tmp_path / "otel-ai.yaml").write_text("receiver:\n  host: 127.0.0.1\nadmin:\n  host: 127.0.0.1\n"
                                           "windows:\n  baselineSnapshot: 1s\n")
    start_ns = time.time_ns() - 50 * 60 * NS
    # The traffic's daily swing peaks an hour before the fault, as it does for the presets
    # (they start at 14:00 UTC), so the outcome does not depend on the hour the test runs.
    fault_hour = ((start_ns / NS + FAULT_S) % 86_400) / 3600.0
    noise = [Noise(n.kind, route=n.route, params={**n.params, "peak_hour": (fault_hour - 1.0) % 24}
                   if n.kind == "daily_swing" else n.params) for n in deep_background_noise()]
    generator = TrafficGenerator(seed=1, start_ns=start_ns, faults=[Fault("deep_error", start_s=FAULT_S)], noise=noise,
                                 topology="deep", rate_scale=0.1)
    onset_ns = start_ns + int(FAULT_S * NS)
    db = tmp_path / "data" / "incidents.db"

    first, log1 = serve(tmp_path, "serve1.log")
    try:
        send(http_port(first, log1), generator, RESTART_S)
        sent_at = time.time_ns()
        # A snapshot taken after the last batch: the worker has had time to learn it.
        wait_for("a baseline snapshot after the traffic", lambda: _snapshot_after(db, sent_at + 2 * NS), timeout_s=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    learning = opened(db)  # the first bursts of each route, before they were known

    second, log2 = serve(tmp_path, "serve2.log")
    try:
        port = http_port(second, log2)
        restored = wait_for("the restored baselines", lambda: next(
            (line for line in log2.read_text().splitlines() if "otel-ai baselines: restored" in line), None))
        send(port, generator, FAULT_S + AFTER_FAULT_S - RESTART_S)
        fault = wait_for("an incident on the fault", lambda: [i for i in opened(db) if i[3] >= onset_ns], timeout_s=30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    after_restart = [i for i in opened(db) if start_ns + RESTART_S * NS <= i[3] < onset_ns]
    delay_s = (fault[0][3] - onset_ns) / NS
    print(f"restart: {len(learning)} incidents while learning (first bursts), {restored}, "
          f"{len(after_restart)} after the restart before the fault, fault caught after {delay_s:.0f} s: {fault[0][:3]}")
    assert int(restored.split("restored")[1].split()[0]) > 20
    assert after_restart == []
    assert delay_s <= 30.0


def _snapshot_after(db: Path, after_ns: int) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT saved_at_ns FROM snapshots WHERE name = 'baselines'").fetchone()
    return row is not None and row[0] >= after_ns
