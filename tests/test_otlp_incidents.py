"""Incidents back into OpenTelemetry, end to end: OTel SDK app -> otel-ai -> an OTLP
capture receiver, which gets the incident trace (root + detect/analyze/notify/
acknowledge/resolve, links to real failing traces), log Events per change, and the
loop guard drops the incident spans when they come back. /metrics shows the KPIs.

(Issue 9 / 13: the root span now goes out when the incident opens, so it is checked
while the incident is still open, and the outcome moved to the resolve span.)"""
from __future__ import annotations

import random
import re
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from otel_ai.exporters.otlp_incidents import incident_trace_ids, problem_trace_ids
from otel_ai.notify.cause import notification_key
from test_e2e_sdk import Sent, get_text, make_processor, make_provider, one_request

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.testing.fake_anthropic import FakeAnthropic, sample_answer
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.harness import wait_for
from otel_ai.testing.otlp_capture import OtlpCapture, attributes

NS = 1_000_000_000
HEALTHY_S, FAILING_S, RECOVERY_S = 300, 60, 180
USAGE = {"input_tokens": 700, "output_tokens": 850, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2400}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def send(tracer, flush, sent: Sent, start_ns: int, seconds: int, failing: bool, rng: random.Random) -> None:
    step = NS // 5
    for i in range(seconds * 5):
        start = start_ns + i * step
        fail = failing and rng.random() < 0.4
        one_request(tracer, start, rng.randint(20, 80) * 1_000_000, "acme" if fail else "globex", fail, sent)
        if i % 100 == 99:
            assert flush()
    assert flush()




def print_trace(root, children) -> None:
    """The incident trace as a tracing UI lays it out (visible with pytest -s; the README shows it)."""
    def line(span, indent: str) -> str:
        took = (span.end_time_unix_nano - span.start_time_unix_nano) / NS
        attrs = attributes(span.attributes)
        keys = [k for k in attrs if k.startswith(("gen_ai.", "incident.current", "incident.threshold",
                                                  "incident.acknowledged_by", "incident.resolution",
                                                  "messaging.system", "incident.top_suspect"))]
        shown = " ".join(f"{k}={attrs[k]}" for k in keys)
        links = f" links→{len(span.links)} failing traces" if span.links else ""
        return f"{indent}{span.name:<48} {took:>7.1f}s {shown}{links}"
    print("\n" + line(root, ""))
    for child in sorted(children, key=lambda c: c.start_time_unix_nano):
        print(line(child, "  └ "))


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_incident_trace_log_events_loop_guard_and_kpis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with OtlpCapture() as capture, FakeSlack() as slack, FakeAnthropic(api_key="k") as claude:
        claude.script(FakeAnthropic.answer(sample_answer(), usage=USAGE))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", capture.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        settings = load_settings(env={"AI_MODE": "notify", "SLACK_INCIDENT_CHANNEL": "#incidents"})
        settings.receiver.host = settings.admin.host = "127.0.0.1"
        settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
        settings.slack.group_wait = 0.1
        app = App(settings, tmp_path / "data", console=False, credentials=Credentials(
            anthropic_api_key="k", anthropic_base_url=claude.url, slack_bot_token="xoxb-test",
            slack_signing_secret=slack.signing_secret, slack_api_url=slack.url, otlp_export=True))
        ports = app.start()
        provider = make_provider("1.4.2", "checkout-7d9f8-abcde")
        processor = make_processor(OTLPSpanExporter(endpoint=f"127.0.0.1:{ports.grpc}", insecure=True))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("checkout.app")
        rng, sent = random.Random(5), Sent()
        try:
            start = time.time_ns() // (10 * NS) * (10 * NS) - (HEALTHY_S + FAILING_S + RECOVERY_S + 20) * NS
            send(tracer, processor.force_flush, sent, start, HEALTHY_S, False, rng)
            send(tracer, processor.force_flush, sent, start + HEALTHY_S * NS, FAILING_S, True, rng)
            incident = wait_for("the incident", lambda: next(iter(app.store.list()), None))
            wait_for("its analysis", lambda: app.store.get(incident.id).analysis)
            # The failures start in checkout's own code: the graph names it, and the incident is
            # its problem's only member.
            assert incident.root_cause["kind"] == "service" and incident.root_cause["service"] == "checkout"
            wait_for("its Slack message", lambda: app.outbox.notification("slack", notification_key(incident)))
            # No orphans while it is open: the problem's span and the incident's root under it are
            # out, and every step so far is the root's child.
            trace_id, root_id = incident_trace_ids(incident.id, incident.problem_id)
            problem_trace, problem_span_id = problem_trace_ids(incident.problem_id)
            assert problem_trace == trace_id
            assert app.otlp.force_flush()
            open_spans = [s for _, s in capture.spans() if int.from_bytes(s.trace_id, "big") == trace_id]
            assert any(int.from_bytes(s.span_id, "big") == root_id for s in open_spans)
            assert all(int.from_bytes(s.parent_span_id, "big") == root_id for s in open_spans
                       if int.from_bytes(s.span_id, "big") not in (root_id, problem_span_id))
            assert app.pipeline.incidents.acknowledge(incident.id, "U42", time.time_ns())
            send(tracer, processor.force_flush, sent, start + (HEALTHY_S + FAILING_S) * NS, RECOVERY_S, False, rng)
            wait_for("the resolution", lambda: app.store.get(incident.id).status == "resolved")
            assert app.otlp.force_flush()
            admin = f"http://127.0.0.1:{ports.admin}"

            # ---- the incident trace ----
            spans = [(res, s) for res, s in capture.spans() if int.from_bytes(s.trace_id, "big") == trace_id]
            by_name = {s.name: (res, s) for res, s in spans}
            root_name = "incident ERROR_RATE_SPIKE POST /api/payments"
            assert root_name in by_name, sorted(by_name)
            resource, root = by_name[root_name]
            assert resource["service.name"] == "otel-ai" and resource["otel_ai.generated"] is True
            assert int.from_bytes(root.span_id, "big") == root_id
            assert int.from_bytes(root.parent_span_id, "big") == problem_span_id
            _, problem = by_name["problem service checkout"]
            assert not problem.parent_span_id and int.from_bytes(problem.span_id, "big") == problem_span_id
            problem_attrs = attributes(problem.attributes)
            assert problem_attrs["problem.id"] == incident.problem_id
            assert problem_attrs["problem.root_cause.kind"] == "service"
            hops = [attributes(e.attributes) for e in problem.events]  # the chain, one event per hop
            assert hops and hops[0]["component"] == "checkout POST /api/payments"
            assert hops[-1]["metric"] == "origin_rate_%" and hops[-1]["now"] > hops[-1]["baseline"]
            root_attrs = attributes(root.attributes)
            assert root_attrs["incident.id"] == incident.id and root_attrs["incident.type"] == "ERROR_RATE_SPIKE"
            assert root_attrs["incident.status"] == "open" and root_attrs["incident.service"] == "checkout"
            assert root_attrs["incident.current_value"] > root_attrs["incident.threshold"]
            linked = {link.trace_id.hex() for link in root.links}
            assert linked and linked <= sent.failing_trace_ids  # one click reaches a real failing request
            assert all(int.from_bytes(link.span_id, "big") != 0 for link in root.links)
            for step in ("detect", "analyze", "notify", "acknowledge", "resolve"):
                _, child = by_name[f"{step} ERROR_RATE_SPIKE"]
                assert int.from_bytes(child.parent_span_id, "big") == root_id, step
            print_trace(problem, [s for _, s in spans if s is not problem])
            outcome = attributes(by_name["resolve ERROR_RATE_SPIKE"][1].attributes)
            assert outcome["incident.status"] == "resolved" and outcome["incident.resolution"] == "recovered"
            assert outcome["incident.peak_value"] >= root_attrs["incident.current_value"]
            assert outcome["incident.recovery_value"] < outcome["incident.threshold"]
            analyze = attributes(by_name["analyze ERROR_RATE_SPIKE"][1].attributes)
            assert analyze["gen_ai.system"] == "anthropic"
            assert analyze["gen_ai.request.model"] == "claude-sonnet-5-5"
            assert analyze["gen_ai.usage.input_tokens"] == 700 and analyze["gen_ai.usage.output_tokens"] == 850
            assert analyze["otel_ai.analysis.cost_usd"] > 0

            # ---- log Events for every change ----
            events = [r for _, r in capture.log_records() if r.event_name.startswith("otel_ai.incident.")
                      and attributes(r.attributes).get("incident.id") == incident.id]
            names = [r.event_name for r in events]
            for change in ("opened", "analyzed", "acknowledged", "resolved"):
                assert f"otel_ai.incident.{change}" in names, names
            assert all(int.from_bytes(r.trace_id, "big") == trace_id for r in events)

            # ---- loop guard: the incident spans sent back are dropped, not analyzed ----
            before = len(app.store.list())
            echo = ExportTraceServiceRequest()
            for request in capture.requests["/v1/traces"]:
                echo.resource_spans.extend(request.resource_spans)
            http = urllib.request.Request(f"http://127.0.0.1:{ports.http}/v1/traces", data=echo.SerializeToString(),
                                          headers={"Content-Type": "application/x-protobuf"}, method="POST")
            with _OPENER.open(http, timeout=5) as response:
                assert response.status == 200
            metrics = get_text(f"{admin}/metrics")
            own = sum(len(ss.spans) for rs in echo.resource_spans for ss in rs.scope_spans)
            assert metric(metrics, "otel_ai_spans_dropped_total", '{reason="own_output"}') == own
            assert len(app.store.list()) == before

            # ---- KPIs on /metrics ----
            assert metric(metrics, "otel_ai_incidents_opened_total",
                          '{severity="critical",type="ERROR_RATE_SPIKE"}') == 1
            assert metric(metrics, "otel_ai_incident_time_to_resolve_seconds_count", '{type="ERROR_RATE_SPIKE"}') == 1
            resolved = app.store.get(incident.id)
            mttr = metric(metrics, "otel_ai_incident_time_to_resolve_seconds_sum", '{type="ERROR_RATE_SPIKE"}')
            assert mttr == pytest.approx((resolved.resolved_at_ns - resolved.opened_at_ns) / NS)
            assert metric(metrics, "otel_ai_incident_time_to_acknowledge_seconds_count",
                          '{type="ERROR_RATE_SPIKE"}') == 1
            assert metric(metrics, "otel_ai_incident_confidence_sum") == pytest.approx(incident.confidence, abs=1e-3)
            assert metric(metrics, "otel_ai_analysis_cost_today_usd") == pytest.approx(
                resolved.analysis["cost_usd"], abs=1e-6)
            assert metric(metrics, "otel_ai_analyses_total", '{outcome="ok",source="claude"}') == 1
            assert metric(metrics, "otel_ai_spans_received_total", '{transport="grpc"}') == sent.spans
            assert metric(metrics, "otel_ai_detection_delay_seconds_count") == 1

            # ---- the same KPIs as OTel metrics over OTLP ----
            assert app.otel_metrics.force_flush()
            exported = {}
            for request in capture.metrics:
                for rm in request.resource_metrics:
                    assert attributes(rm.resource.attributes)["otel_ai.generated"] is True
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            points = m.sum.data_points or m.gauge.data_points
                            exported[m.name] = {tuple(sorted(attributes(p.attributes).items())):
                                                (p.as_double if p.HasField("as_double") else p.as_int) for p in points}
            assert exported["otel_ai_incident_time_to_resolve_seconds.count"][(("type", "ERROR_RATE_SPIKE"),)] == 1
            assert exported["otel_ai_incident_time_to_resolve_seconds.sum"][(("type", "ERROR_RATE_SPIKE"),)] == \
                pytest.approx(mttr)
            assert exported["otel_ai_analysis_cost_today_usd"][()] > 0
            assert exported["otel_ai_spans_received"][(("transport", "grpc"),)] >= sent.spans
        finally:
            provider.shutdown()
            app.stop(grace_s=0)
