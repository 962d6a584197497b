"""One redaction for everything that leaves the process.

An OTel SDK app plants secrets and PII in its spans: a bearer token, Anthropic, AWS and
Slack keys, a password in a URL and in SQL, an email address, a card number. Some are on
every request, most only on the failing ones, so they become the incident's top
suspects and top exceptions. None of them may reach anything outside: Claude (the fake
Messages API), Slack, PagerDuty, the webhook, or the OTLP capture of incident traces,
log events and metrics. The local store keeps what the app sent."""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from test_e2e_sdk import make_processor, make_provider

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.testing.fake_anthropic import FakeAnthropic, sample_answer
from otel_ai.testing.fake_pagerduty import FakePagerDuty
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.fake_webhook import FakeWebhook
from otel_ai.testing.harness import wait_for
from otel_ai.testing.otlp_capture import OtlpCapture

NS = 1_000_000_000
HEALTHY_S, FAILING_S, RECOVERY_S = 300, 60, 180

SECRETS = {
    "bearer": "Bearer 9f8e7d6c5b4aPLANTEDbearer0123",
    "anthropic": "sk-ant-api03-PLANTEDanthropicKey0123456789",
    "aws": "AKIAPLANTEDAWS012345",
    "slack": "xoxb-123456789012-PLANTEDslackTok",
    "url_password": "hunter2PLANTEDurl",
    "sql_password": "Sup3rPLANTEDsqlPw",
    "email": "jane.planted@example.com",
    "card": "4111 1111 1111 1111",
}
# What must never be seen outside (the card also without spaces, as some encoders join it).
NEEDLES = [b"PLANTED", b"jane.planted", b"4111 1111 1111 1111", b"4111111111111111", b"AKIAPLANTED"]


def request(tracer, start_ns: int, fail: bool, rng: random.Random) -> None:
    attributes = {"http.request.method": "POST", "http.route": "/api/payments",
                  "http.response.status_code": 500 if fail else 200,
                  "http.request.header.authorization": SECRETS["bearer"]}  # on every request
    if fail:  # only on the failing requests: they become the suspects
        attributes.update({
            "app.notify.token": SECRETS["slack"], "app.llm.credentials": SECRETS["anthropic"],
            "cloud.aws.access": SECRETS["aws"], "enduser.email": SECRETS["email"],
            "app.payment.card": SECRETS["card"],
            "db.url": f"postgres://app:{SECRETS['url_password']}@db.internal:5432/pay",
        })
    span = tracer.start_span("POST /api/payments", kind=SpanKind.SERVER, start_time=start_ns, attributes=attributes)
    end = start_ns + rng.randint(20, 60) * 1_000_000
    if fail:
        message = (f"UPDATE users SET password='{SECRETS['sql_password']}' failed for {SECRETS['email']}: card "
                   f"{SECRETS['card']} declined; upstream said {SECRETS['bearer']} ({SECRETS['anthropic']})")
        span.record_exception(RuntimeError(message), timestamp=end - 1)
        span.set_status(Status(StatusCode.ERROR, message))
    span.end(end_time=end)


def send(tracer, flush, start_ns: int, seconds: int, failing: bool, rng: random.Random) -> None:
    for i in range(seconds * 5):
        request(tracer, start_ns + i * (NS // 5), failing and rng.random() < 0.4, rng)
        if i % 100 == 99:
            assert flush()
    assert flush()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def test_planted_secrets_reach_no_fake_and_no_otlp_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with OtlpCapture() as capture, FakeSlack() as slack, FakeAnthropic(api_key="k") as claude, \
            FakePagerDuty() as pagerduty, FakeWebhook() as webhook:
        claude.script(*[FakeAnthropic.answer(sample_answer()) for _ in range(5)])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", capture.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        settings = load_settings(env={"SLACK_INCIDENT_CHANNEL": "#incidents"})
        settings.receiver.host = settings.admin.host = "127.0.0.1"
        settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
        for rules in (settings.slack, settings.pagerduty, settings.webhook):
            rules.group_wait = 0.1
        settings.pagerduty.events_url = pagerduty.events_url
        settings.webhook.url = webhook.url
        app = App(settings, tmp_path / "data", console=False, credentials=Credentials(
            anthropic_api_key="k", anthropic_base_url=claude.url, slack_bot_token="xoxb-test",
            slack_signing_secret=slack.signing_secret, slack_api_url=slack.url,
            pagerduty_routing_key=pagerduty.routing_key, otlp_export=True))
        ports = app.start()
        provider = make_provider("1.4.2", "checkout-7d9f8-abcde")
        processor = make_processor(OTLPSpanExporter(endpoint=f"127.0.0.1:{ports.grpc}", insecure=True))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("checkout.app")
        rng = random.Random(7)
        try:
            start = time.time_ns() // (10 * NS) * (10 * NS) - (HEALTHY_S + FAILING_S + RECOVERY_S + 20) * NS
            send(tracer, processor.force_flush, start, HEALTHY_S, False, rng)
            send(tracer, processor.force_flush, start + HEALTHY_S * NS, FAILING_S, True, rng)
            incident = wait_for("the incident", lambda: next(iter(app.store.list()), None))
            wait_for("every notifier", lambda: app.store.get(incident.id).analysis and slack.calls_to(
                "chat.postMessage") and pagerduty.triggers() and webhook.payloads())
            assert app.pipeline.incidents.acknowledge(incident.id, "U42", time.time_ns())
            send(tracer, processor.force_flush, start + (HEALTHY_S + FAILING_S) * NS, RECOVERY_S, False, rng)
            wait_for("the resolution", lambda: app.store.get(incident.id).status == "resolved")
            try:  # a loaded CI machine can time out one delivery: its retry comes after the 10 s timeout + backoff
                wait_for("the resolution everywhere", lambda: any(p["status"] == "resolved" for p in webhook.payloads())
                         and any(e.action == "resolve" for e in pagerduty.accepted()), timeout_s=60)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; outbox {app.outbox.counts()}; PD actions "
                                     f"{[e.action for e in pagerduty.events]}; webhook statuses "
                                     f"{[p['status'] for p in webhook.payloads()]}") from exc
            assert app.otlp.force_flush() and app.otel_metrics.force_flush()

            stored = app.store.get(incident.id)
            suspects = {s["key"]: s["value"] for s in stored.suspects}
            # The planted values really were the evidence: the store keeps them as the app sent them.
            assert any(v in SECRETS.values() or "PLANTED" in str(v) for v in suspects.values()), suspects
            assert any("PLANTED" in e.get("message", "") for e in stored.context["top_errors"])

            outbound = {
                "claude": b"".join(r.raw for r in claude.requests),
                "slack": b"".join(repr(c.args).encode() for c in slack.calls),
                "pagerduty": b"".join(repr(e.body).encode() for e in pagerduty.events),
                "webhook": b"".join(c.body for c in webhook.calls),
                "otlp": b"".join(m.SerializeToString() for path in capture.requests
                                 for m in capture.requests[path]),
            }
            for where, raw in outbound.items():
                assert raw, f"nothing reached {where}"
                for needle in NEEDLES:
                    assert needle not in raw, (where, needle)
            markers = b"".join(outbound.values())
            assert b"[REDACTED" in markers  # redacted, not merely absent
            print(f"\nplanted {len(SECRETS)} secrets; top suspects in the store: {sorted(suspects)[:4]}; outbound "
                  f"bytes checked: " + ", ".join(f"{k} {len(v):,}" for k, v in outbound.items()))
        finally:
            provider.shutdown()
            app.stop(grace_s=0)
