"""Rollout modes as a new user meets them (issue 13, item 1): with Slack's three variables
set and AI_MODE unset, `otel-ai serve` notifies, and an SDK app's incident reaches the
fake Slack; with AI_MODE=shadow both the start-up banner and `otel-ai check` say that
nothing will be sent."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_e2e_sdk import Sent, make_processor, make_provider
from test_otlp_incidents import FAILING_S, HEALTHY_S, NS, send

from otel_ai.cli import main
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.harness import wait_for

CHANNEL = "#incidents"


class Serve:
    """`otel-ai serve` as a user starts it: no config file, the environment only."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_ai", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--admin-port", "0"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        found = wait_for("otel-ai serve to start", lambda: self.port("OTLP/gRPC") and self.banner(), timeout_s=30)
        assert found

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def port(self, name: str) -> int | None:
        for line in self.lines:
            match = re.search(rf"{re.escape(name)} :(\d+)", line)
            if match:
                return int(match.group(1))
        return None

    def banner(self) -> list[str]:
        return [line for line in self.lines if line.startswith("otel-ai notifications:")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)


def slack_env(slack: FakeSlack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AI_MODE", "PAGERDUTY_ROUTING_KEY", "AI_WEBHOOK_URL")}
    env.update(SLACK_BOT_TOKEN="xoxb-test", SLACK_INCIDENT_CHANNEL=CHANNEL, SLACK_API_URL=slack.url,
               ANTHROPIC_API_KEY="", NO_PROXY="127.0.0.1", **extra)
    return env


def test_slack_notifies_by_default_and_an_sdk_apps_incident_reaches_it(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with FakeSlack() as slack:
        server = Serve(tmp_path / "data", slack_env(slack))
        provider = make_provider("1.4.2", "checkout-7d9f8-abcde")
        try:
            banner = "\n".join(server.banner())
            assert "mode notify" in banner and f"slack: on → {CHANNEL}" in banner
            processor = make_processor(OTLPSpanExporter(endpoint=f"127.0.0.1:{server.port('OTLP/gRPC')}",
                                                        insecure=True))
            provider.add_span_processor(processor)
            tracer = provider.get_tracer("checkout.app")
            rng = random.Random(5)
            start = time.time_ns() // (10 * NS) * (10 * NS) - (HEALTHY_S + FAILING_S + 20) * NS
            send(tracer, processor.force_flush, Sent(), start, HEALTHY_S, False, rng)
            send(tracer, processor.force_flush, Sent(), start + HEALTHY_S * NS, FAILING_S, True, rng)
            sent_at = time.monotonic()
            posted = wait_for("the incident in Slack", lambda: slack.channel_messages(CHANNEL), timeout_s=60)
            waited = time.monotonic() - sent_at
            assert "ERROR RATE SPIKE" in posted[0]["blocks"][0]["text"]["text"]
            print(f"\nAI_MODE unset: {banner!r}; first Slack message {waited:.1f} s after the failing minute was "
                  f"sent (groupWait 10 s): {posted[0]['text'][:100]!r}")
        finally:
            provider.shutdown()
            server.stop()


def test_shadow_mode_says_nothing_will_be_sent_in_the_banner_and_in_check(tmp_path: Path, capsys,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeSlack() as slack:
        env = slack_env(slack, AI_MODE="shadow")
        server = Serve(tmp_path / "data", env)
        try:
            banner = "\n".join(server.banner())
        finally:
            server.stop()
        assert "mode shadow" in banner and "slack: configured, but AI_MODE=shadow: nothing will be sent" in banner
        monkeypatch.chdir(tmp_path)
        for name in ("SLACK_BOT_TOKEN", "SLACK_INCIDENT_CHANNEL", "SLACK_API_URL", "AI_MODE", "NO_PROXY"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        main(["check", "--data-dir", str(tmp_path / "data")])
        out = capsys.readouterr().out
        assert "AI_MODE=shadow: incidents are analyzed and recorded, nothing will be sent to anyone" in out
        assert "slack is configured but nothing will be sent: configured, but AI_MODE=shadow" in out
