"""End to end: real OpenTelemetry Python SDK "apps" export to a real, serving App.

The SDK apps stamp explicit start/end times spread over the last ~8 minutes of wall
time (7 minutes of healthy traffic, then a minute at ~40 % errors that ends ~20 s
before now), so the watermark closes the failing slots as soon as the spans arrive
and the test does not wait for minutes of wall time. The spans go out in
chronological chunks (one force_flush per 20 s of event time) so no chunk is late or
too far ahead for the window ring.

Checked: the ERROR_RATE_SPIKE incident appears in the JSONL sink and on the admin
API (list and by id) with the DESIGN fields, exemplar trace ids that the SDK really
sent, the planted exception, the planted cause as the top suspect, and /metrics
counting every span that was exported.
"""
from __future__ import annotations

import datetime as _dt
import json
import random
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings

NS = 1_000_000_000
ROUTE = "/api/payments"
SERVICE = "checkout"
RATE_PER_S = 5
HEALTHY_S = 420  # 7 minutes
FAILING_S = 60
END_BEFORE_NOW_S = 20
CHUNK_S = 20  # event time per force_flush
FAIL_SHARE = 0.4
HEALTHY_ERROR_EVERY = 500  # ~0.2 % background errors
HEALTHY_TENANTS = ("globex", "initech", "umbrella", "hooli")
POLL_S = 25.0

# A direct opener: a proxy from the environment must never see 127.0.0.1 traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- app


pytestmark = pytest.mark.usefixtures("loopback_without_proxy")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    settings = load_settings(env={})
    settings.receiver.host = "127.0.0.1"
    settings.receiver.grpc_port = 0
    settings.receiver.http_port = 0
    settings.admin.host = "127.0.0.1"
    settings.admin.port = 0
    running = App(settings, tmp_path / "data", incidents_jsonl=tmp_path / "incidents.jsonl", console=False,
                  credentials=Credentials())
    try:
        running.start()
        yield running
    finally:
        running.stop(grace_s=0)


def get_json(url: str) -> dict:
    with _OPENER.open(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def get_text(url: str) -> str:
    with _OPENER.open(url, timeout=5) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


# ------------------------------------------------------------------ the SDK app


@dataclass
class Sent:
    spans: int = 0
    failing_trace_ids: set[str] = field(default_factory=set)
    all_trace_ids: set[str] = field(default_factory=set)
    fail_start_ns: int = 0
    last_end_ns: int = 0


def make_provider(version: str, pod: str) -> TracerProvider:
    resource = Resource.create({"service.name": SERVICE, "service.version": version, "k8s.pod.name": pod})
    return TracerProvider(resource=resource, shutdown_on_exit=False)


def make_processor(exporter) -> BatchSpanProcessor:
    # Exports happen only on our force_flush (batch size and delay are out of reach), so
    # every export request holds exactly one chronological chunk.
    return BatchSpanProcessor(exporter, max_queue_size=100_000, schedule_delay_millis=600_000,
                              max_export_batch_size=50_000)


def one_request(tracer: trace.Tracer, start_ns: int, duration_ns: int, tenant: str, fail: bool,
                sent: Sent, error_message: str = "card declined") -> None:
    code = 500 if fail else 200
    parent = tracer.start_span(
        f"POST {ROUTE}", kind=SpanKind.SERVER, start_time=start_ns,
        attributes={"http.request.method": "POST", "http.route": ROUTE, "http.response.status_code": code,
                    "tenant.id": tenant},
    )
    # The downstream call succeeds: the planted cause is on the server side only.
    child_start = start_ns + duration_ns // 10
    child = tracer.start_span(
        "POST", context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=child_start,
        attributes={"peer.service": "payments-api", "http.request.method": "POST",
                    "http.response.status_code": 200},
    )
    child.end(end_time=child_start + duration_ns * 3 // 10)
    end_ns = start_ns + duration_ns
    if fail:
        parent.record_exception(RuntimeError(error_message), timestamp=end_ns - 1_000_000)
        parent.set_status(Status(StatusCode.ERROR, error_message))
    parent.end(end_time=end_ns)
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert trace_id == format(child.get_span_context().trace_id, "032x")
    sent.all_trace_ids.add(trace_id)
    if fail:
        sent.failing_trace_ids.add(trace_id)
    sent.spans += 2
    sent.last_end_ns = max(sent.last_end_ns, end_ns)


def send_traffic(pick: Callable[[bool, random.Random], tuple[trace.Tracer, str]], flush: Callable[[], bool],
                 seed: int, error_message: str = "card declined") -> Sent:
    """pick(planted, rng) -> (tracer, tenant) for one request; flush() exports what ended."""
    rng = random.Random(seed)
    sent = Sent()
    # Aligned to the 10 s slots, so the failing minute fills whole slots.
    now = time.time_ns() // (10 * NS) * (10 * NS)
    first = now - (HEALTHY_S + FAILING_S + END_BEFORE_NOW_S) * NS
    sent.fail_start_ns = first + HEALTHY_S * NS
    step = NS // RATE_PER_S
    total = (HEALTHY_S + FAILING_S) * RATE_PER_S
    next_flush = first + CHUNK_S * NS
    for i in range(total):
        start = first + i * step
        if start >= next_flush:
            assert flush(), "force_flush failed"
            next_flush += CHUNK_S * NS
        failing_phase = start >= sent.fail_start_ns
        planted = failing_phase and rng.random() < FAIL_SHARE
        background_error = not failing_phase and i % HEALTHY_ERROR_EVERY == HEALTHY_ERROR_EVERY - 1
        tracer, tenant = pick(planted, rng)
        duration = rng.randint(20, 80) * 1_000_000  # well below a slot, so spans end in order
        one_request(tracer, start, duration, tenant, planted or background_error, sent, error_message)
    assert flush(), "force_flush failed"
    assert sent.last_end_ns < time.time_ns() - 10 * NS, "traffic generation took too long"
    return sent


# ------------------------------------------------------------------- assertions


def parse_rfc3339_ns(text: str) -> int:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text), text
    return int(_dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * NS)


def wait_for_incident(admin: str) -> dict:
    deadline = time.monotonic() + POLL_S
    listing: dict = {}
    while time.monotonic() < deadline:
        listing = get_json(f"{admin}/api/incidents")
        if listing["total"] > 0:
            return listing
        time.sleep(0.2)
    pytest.fail(f"no incident within {POLL_S}s: {listing}")


def jsonl_lines(path: Path, incident_id: str) -> list[dict]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line in lines if line["id"] == incident_id]


def check_incident(app: App, jsonl: Path, sent: Sent, transport: str, suspect: tuple[str, str]) -> dict:
    admin = f"http://127.0.0.1:{app.ports.admin}"
    listing = wait_for_incident(admin)

    # Exactly the one incident: the healthy dependency and the latency never page.
    assert listing["total"] == 1, [(i["type"], i["service"], i["route"]) for i in listing["incidents"]]
    assert len(listing["incidents"]) == 1
    listed = listing["incidents"][0]
    assert (listed["type"], listed["service"], listed["method"], listed["route"]) == (
        "ERROR_RATE_SPIKE", SERVICE, "POST", ROUTE)
    incident_id = listed["id"]
    assert re.fullmatch(r"inc_[0-9a-f]{16}", incident_id)

    # The by-id API and the JSONL sink agree on the same version (the exporter writes
    # just after the store, so allow a moment for the line to land).
    deadline = time.monotonic() + 5
    while True:
        snapshot = get_json(f"{admin}/api/incidents/{incident_id}")
        lines = jsonl_lines(jsonl, incident_id)
        if lines and lines[-1]["version"] == snapshot["version"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines, f"incident {incident_id} missing from {jsonl}"
    assert lines[0]["change"] == "opened" and lines[0]["version"] == 1
    assert lines[-1] == snapshot
    assert listed["version"] <= snapshot["version"]
    if listed["version"] == snapshot["version"]:
        assert listed == snapshot

    # DESIGN fields.
    assert snapshot["type"] == "ERROR_RATE_SPIKE"
    assert snapshot["severity"] == "critical"
    assert snapshot["status"] == "open"
    assert (snapshot["service"], snapshot["method"], snapshot["route"]) == (SERVICE, "POST", ROUTE)
    assert isinstance(snapshot["summary"], str) and ROUTE in snapshot["summary"]
    assert 0.0 <= snapshot["confidence"] <= 1.0
    opened_ns = parse_rfc3339_ns(snapshot["opened_at"])
    # Opened at the end of a slot inside the failing minute (event time, not wall time).
    assert sent.fail_start_ns < opened_ns <= sent.last_end_ns + 10 * NS
    assert snapshot["resolved_at"] is None

    data = snapshot["data"]
    assert data["metric"] == "error_rate"
    assert data["current_value"] > 10
    assert data["current_value"] >= data["threshold"]

    context = snapshot["context"]
    exemplars = context["exemplar_trace_ids"]
    assert exemplars, context
    for trace_id in exemplars:
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id), trace_id
        assert trace_id in sent.failing_trace_ids, f"{trace_id} is not a failing trace the SDK sent"
    errors = context["top_errors"]
    assert errors, context
    assert errors[0]["type"] == "RuntimeError"
    assert errors[0]["message"] == "card declined"
    assert errors[0]["count"] >= 1

    suspects = snapshot["suspects"]
    assert suspects, snapshot
    assert (suspects[0]["key"], suspects[0]["value"]) == suspect, suspects
    # No good request carries it; several of the captured failing ones do (the rare
    # background errors of the healthy minutes are failing requests without it).
    assert suspects[0]["good_share"] == 0.0
    assert round(suspects[0]["bad_share"] * context["suspect_sample"]["bad"]) >= 3
    assert suspects[0]["score"] == max(s["score"] for s in suspects)

    metrics = get_text(f"{admin}/metrics")
    match = re.search(r'^otel_ai_spans_received_total\{transport="%s"\} (\S+)$' % transport, metrics, re.M)
    assert match, f"no otel_ai_spans_received_total for {transport}"
    received = float(match.group(1))
    assert received > 0
    # Nothing was rejected or lost between the SDK and the receiver.
    assert received == sent.spans
    return snapshot


# ------------------------------------------------------------------------ tests


def test_grpc_sdk_app_tenant_failing(app: App, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = make_provider("1.4.2", "checkout-7d9f8-abcde")
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{app.ports.grpc}", insecure=True)
    provider.add_span_processor(make_processor(exporter))
    tracer = provider.get_tracer("checkout.app")
    try:
        def pick(planted: bool, rng: random.Random) -> tuple[trace.Tracer, str]:
            return tracer, "acme" if planted else rng.choice(HEALTHY_TENANTS)

        sent = send_traffic(pick, provider.force_flush, seed=7)
        snapshot = check_incident(app, tmp_path / "incidents.jsonl", sent, "grpc", ("tenant.id", "acme"))
        # One version only: the planted tenant, not the version, is to blame.
        assert context_versions(snapshot) == []
    finally:
        provider.shutdown()


def test_http_sdk_app_new_version_failing(app: App, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Two "deployments" of checkout; both export through one processor so that the
    # chunks stay in event-time order across them.
    stable = make_provider("1.9.0", "checkout-5c6b7-qwert")
    canary = make_provider("2.0.0", "checkout-8e1f2-zxcvb")
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{app.ports.http}/v1/traces")
    processor = make_processor(exporter)
    stable.add_span_processor(processor)
    canary.add_span_processor(processor)
    stable_tracer = stable.get_tracer("checkout.app")
    canary_tracer = canary.get_tracer("checkout.app")
    try:
        def pick(planted: bool, rng: random.Random) -> tuple[trace.Tracer, str]:
            return (canary_tracer if planted else stable_tracer), rng.choice(HEALTHY_TENANTS)

        sent = send_traffic(pick, processor.force_flush, seed=11)
        snapshot = check_incident(app, tmp_path / "incidents.jsonl", sent, "http", ("service.version", "2.0.0"))
        # The canary was first seen shortly before the onset: it is reported as new.
        assert context_versions(snapshot) == ["2.0.0"]
    finally:
        stable.shutdown()
        canary.shutdown()


def context_versions(snapshot: dict) -> list[str]:
    return [v["version"] for v in snapshot["context"]["new_versions"]]
