"""The fakes as a person runs them: `python -m ...` prints a banner with the URL, then one
readable line per call received."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import slack_sdk

from otel_ai.testing.harness import wait_for


class Lines:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.seen: list[str] = []

    def next_line(self) -> str:
        line = self.process.stdout.readline()
        self.seen.append(line)
        return line


@contextmanager
def running(module: str, *args: str) -> Iterator[tuple[str, Lines]]:
    process = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(process)
        banner = lines.next_line()
        url = banner.split(" on ", 1)[1].split()[0]
        yield url, lines
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_fake_slack_prints_each_call() -> None:
    with running("otel_ai.testing.fake_slack") as (url, lines):
        client = slack_sdk.WebClient(token="xoxb-test", base_url=url)
        client.chat_postMessage(channel="#incidents", text="checkout is failing")
        line = wait_for("the call line", lines.next_line, timeout_s=10)
    assert "chat.postMessage #incidents 'checkout is failing' -> 200 ok" in line


def test_fake_anthropic_prints_each_call() -> None:
    import anthropic

    with running("otel_ai.testing.fake_anthropic") as (url, lines):
        client = anthropic.Anthropic(api_key="test", base_url=url, max_retries=0)
        client.messages.create(model="claude-haiku-5-5", max_tokens=256,
                               messages=[{"role": "user", "content": "hello"}])
        line = wait_for("the call line", lines.next_line, timeout_s=10)
    assert "POST /v1/messages model=claude-haiku-5-5 -> 200" in line and "tokens" in line


def test_otlp_capture_prints_each_export() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with running("otel_ai.testing.otlp_capture") as (url, lines):
        assert "OTEL_EXPORTER_OTLP_ENDPOINT=" in lines.seen[0]
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=5)))
        with provider.get_tracer("by-hand").start_as_current_span("GET /cart"):
            pass
        provider.shutdown()
        line = wait_for("the export line", lines.next_line, timeout_s=10)
    assert "/v1/traces 1 spans: GET /cart" in line
