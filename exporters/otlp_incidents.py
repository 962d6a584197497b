"""Incidents back into OpenTelemetry: one trace per incident, and a log Event per change.

Sent with the OTel SDK's own OTLP exporters, configured by the standard variables
(OTEL_EXPORTER_OTLP_ENDPOINT, ..._PROTOCOL, ..._HEADERS, and the per-signal forms), so a
tracing UI shows each incident next to the failing requests it links to.

The trace id and the root span id are derived from the incident id, so every change of
an incident lands in the same trace without keeping state. The incidents of one problem
share the problem's trace instead: a problem span (its root cause, the chain to it as
one event per hop, links to failing requests) with each member's root span under it. The root span, the incident
as detected (from the first slot over the threshold to the open), goes out when the
incident opens; its children go out as they happen: detect (again on a reopen),
analyze, notify (one per notifier), acknowledge, resolve (which carries the outcome:
duration, peak, value at recovery). So a tracing UI never shows an orphan, even while
the incident is still open or after a restart. Everything carries the resource
attribute otel_ai.generated=true, which otel-ai's own decoder drops (the loop guard),
so incidents sent back through a Collector are never analyzed again.

Everything sent is redacted first (otel_ai/analysis/redact.py), like every other
output that leaves the process.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from otel_ai.analysis.redact import redact_incident, redactor_from_settings
from otel_ai.config import Redaction
from otel_ai.decode import GENERATED_ATTRIBUTE
from otel_ai.model import Incident
from otel_ai.otlp_env import otlp_protocol
from otel_ai.problems import root_title
from otel_ai.timefmt import parse_rfc3339

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("otel_ai.incidents", "1")
MAX_LINKS = 5
MAX_PROBLEMS_SENT = 10_000
ROOT_FIELDS = ("kind", "service", "pod", "version", "dependency", "operation", "score")
DEFAULT_SLOT_NS = 10 * 1_000_000_000


def _ids(key: str) -> tuple[int, int]:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def incident_trace_ids(incident_id: str, problem_id: str | None = None) -> tuple[int, int]:
    """(trace id, span id of the incident's root span): stable across changes and restarts.
    An incident in a problem lives in the problem's trace, under the problem's span."""
    trace_id, span_id = _ids(incident_id)
    return (_ids(problem_id)[0] if problem_id else trace_id), span_id


def problem_trace_ids(problem_id: str) -> tuple[int, int]:
    """(trace id, span id of the problem's span): the parent of its members' root spans."""
    return _ids(problem_id)


def _child_span_id(incident_id: str, step: str, version: int) -> int:
    digest = hashlib.sha256(f"{incident_id}|{step}|{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def default_exporters() -> tuple[SpanExporter, LogRecordExporter]:
    """OTLP span and log exporters over the protocol the standard variables ask for."""
    if otlp_protocol("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    if otlp_protocol("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    return OTLPSpanExporter(), OTLPLogExporter()


class OtlpIncidentExporter:
    name = "otlp"

    def __init__(self, span_exporter: SpanExporter, log_exporter: LogRecordExporter,
                 resource: Resource | None = None, redaction: Redaction | None = None) -> None:
        self.redactor = redactor_from_settings(redaction or Redaction())
        self.resource = resource or Resource.create({"service.name": "otel-ai", GENERATED_ATTRIBUTE: True})
        self.spans = BatchSpanProcessor(span_exporter, schedule_delay_millis=1000)
        self.logs = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(log_exporter, schedule_delay_millis=1000))
        self.logger = self.logs.get_logger("otel_ai.incidents")
        self._problems_sent: OrderedDict[str, None] = OrderedDict()  # problems whose span went out

    # ---- exporter interface ----
    def export(self, incident: Incident) -> None:
        incident = redact_incident(self.redactor, incident)
        change = incident.last_change
        step = {"opened": "detect", "reopened": "detect", "analyzed": "analyze", "acknowledged": "acknowledge",
                "resolved": "resolve"}.get(change)
        if change == "opened":
            self._root(incident)
        if step == "detect":
            self._span(incident, "detect", self._detect_start(incident), incident.updated_at_ns, links=True)
        elif step == "analyze":
            self._analyze_span(incident)
        elif step == "acknowledge":
            at = incident.acknowledged_at_ns or incident.updated_at_ns
            self._span(incident, "acknowledge", at, at, {"incident.acknowledged_by": incident.acknowledged_by or ""})
        elif step == "resolve":
            at = incident.resolved_at_ns or incident.updated_at_ns
            self._span(incident, "resolve", at, at, self._outcome(incident))
        self._event(incident)

    def notified(self, notifier: str, snapshot: dict, detail: dict, at_ns: int) -> None:
        """A notifier made the incident's notification (a Slack post, a PagerDuty trigger):
        the notify step of the incident's trace. `snapshot` is the redacted one it sent."""
        incident_id, event_type = str(snapshot.get("id") or ""), str(snapshot.get("type") or "")
        if not incident_id:
            return
        trace_id, root_id = incident_trace_ids(incident_id, snapshot.get("problem_id"))
        attributes = {"incident.id": incident_id, "incident.type": event_type, "incident.step": "notify",
                      "otel_ai.notifier": notifier, **{k: str(v)[:200] for k, v in detail.items()}}
        span = ReadableSpan(
            name=f"notify {event_type}", context=_context(trace_id, _child_span_id(incident_id, f"notify:{notifier}", 0)),
            parent=_context(trace_id, root_id), resource=self.resource, attributes=attributes, kind=SpanKind.PRODUCER,
            start_time=at_ns, end_time=at_ns, instrumentation_scope=SCOPE)
        self.spans.on_end(span)

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        return self.spans.force_flush(timeout_ms) and self.logs.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.spans.shutdown()
        self.logs.shutdown()

    # ---- spans ----
    def _root(self, incident: Incident) -> None:
        """The incident as detected; sent when it opens, so its later steps always have a parent.
        A problem's first member sends the problem's span first, as the parent of them all."""
        trace_id, root_id = incident_trace_ids(incident.id, incident.problem_id)
        parent = None
        if incident.problem_id is not None:
            parent = _context(*problem_trace_ids(incident.problem_id))
            if incident.problem_id not in self._problems_sent:
                self._problem(incident)
        span = ReadableSpan(
            name=_root_name(incident), context=_context(trace_id, root_id), parent=parent, resource=self.resource,
            attributes=self._attributes(incident), links=self._links(incident), kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, incident.summary[:200]), start_time=self._detect_start(incident),
            end_time=incident.opened_at_ns, instrumentation_scope=SCOPE)
        self.spans.on_end(span)

    def _problem(self, first: Incident) -> None:
        """The problem's span: its root cause, and the chain to it as one event per hop."""
        self._problems_sent[first.problem_id] = None
        while len(self._problems_sent) > MAX_PROBLEMS_SENT:
            self._problems_sent.popitem(last=False)
        root = first.root_cause or {}
        trace_id, span_id = problem_trace_ids(first.problem_id)
        attributes = {"problem.id": first.problem_id, "problem.root_cause": root_title(root),
                      **{f"problem.root_cause.{k}": str(root[k]) for k in ROOT_FIELDS if root.get(k) is not None}}
        events = [Event(f"hop {n}", {k: v for k, v in hop.items() if isinstance(v, (str, int, float))},
                        first.opened_at_ns)
                  for n, hop in enumerate(root.get("evidence") or []) if isinstance(hop, dict)]
        span = ReadableSpan(
            name=f"problem {root_title(root)}", context=_context(trace_id, span_id), parent=None,
            resource=self.resource, attributes=attributes, events=events, links=self._links(first),
            kind=SpanKind.INTERNAL, status=Status(StatusCode.ERROR, root_title(root)[:200]),
            start_time=self._detect_start(first), end_time=first.opened_at_ns, instrumentation_scope=SCOPE)
        self.spans.on_end(span)

    @staticmethod
    def _outcome(incident: Incident) -> dict[str, Any]:
        data = incident.data
        attributes: dict[str, Any] = {
            "incident.resolution": str(incident.context.get("resolution", "")),
            "incident.duration_s": max(0.0, ((incident.resolved_at_ns or incident.updated_at_ns)
                                             - incident.opened_at_ns) / 1e9),
            "incident.status": incident.status}
        for key in ("peak_value", "recovery_value", "threshold"):
            if isinstance(data.get(key), (int, float)):
                attributes[f"incident.{key}"] = float(data[key])
        return attributes

    def _span(self, incident: Incident, step: str, start: int, end: int, extra: dict | None = None,
              links: bool = False, kind: SpanKind = SpanKind.INTERNAL) -> None:
        trace_id, root_id = incident_trace_ids(incident.id, incident.problem_id)
        attributes = {"incident.id": incident.id, "incident.type": incident.type, "incident.step": step,
                      **(extra or {})}
        if step == "detect":
            attributes.update(self._attributes(incident))
        span = ReadableSpan(
            name=f"{step} {incident.type}", context=_context(trace_id, _child_span_id(incident.id, step, incident.version)),
            parent=_context(trace_id, root_id), resource=self.resource, attributes=attributes,
            links=self._links(incident) if links else (), kind=kind, start_time=start, end_time=max(end, start),
            instrumentation_scope=SCOPE)
        self.spans.on_end(span)

    def _analyze_span(self, incident: Incident) -> None:
        a = incident.analysis or {}
        end = parse_rfc3339(a.get("analyzed_at")) or incident.updated_at_ns
        start = end - int(float(a.get("latency_ms") or 0) * 1e6)
        usage = a.get("usage") or {}
        attributes: dict[str, Any] = {
            "gen_ai.system": "anthropic" if a.get("source") == "claude" else "otel_ai.offline",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": a.get("model") or "offline",
            "gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0),
            "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
            "gen_ai.usage.cache_read_input_tokens": int(usage.get("cache_read_input_tokens") or 0),
            "gen_ai.usage.cache_creation_input_tokens": int(usage.get("cache_creation_input_tokens") or 0),
            "otel_ai.analysis.cost_usd": float(a.get("cost_usd") or 0.0),
            "otel_ai.analysis.source": str(a.get("source") or ""),
            "otel_ai.analysis.confidence": float(a.get("confidence") or 0.0),
            "otel_ai.analysis.rollback_needed": bool(a.get("rollback_needed")),
            "otel_ai.analysis.attempts": int(a.get("attempts") or 0),
        }
        if a.get("offline_reason"):
            attributes["otel_ai.analysis.offline_reason"] = str(a["offline_reason"])[:200]
        self._span(incident, "analyze", start, end, attributes, kind=SpanKind.CLIENT)

    def _attributes(self, incident: Incident) -> dict[str, Any]:
        data = incident.data
        attributes: dict[str, Any] = {
            "incident.id": incident.id, "incident.type": incident.type, "incident.severity": incident.severity,
            "incident.status": incident.status, "incident.confidence": float(incident.confidence),
            "incident.summary": incident.summary[:500], "incident.subject_kind": incident.subject.kind,
            "incident.service": incident.subject.service, "incident.route": incident.subject.route,
            "incident.method": incident.subject.method, "incident.metric": str(data.get("metric") or ""),
        }
        for key in ("current_value", "threshold", "baseline_value", "breach_ratio"):
            if isinstance(data.get(key), (int, float)):
                attributes[f"incident.{key}"] = float(data[key])
        if incident.suspects:
            top = incident.suspects[0]
            attributes["incident.top_suspect"] = f"{top.get('key')}={top.get('value')}"[:200]
        return attributes

    @staticmethod
    def _links(incident: Incident) -> list[Link]:
        trace_ids = incident.context.get("exemplar_trace_ids") or []
        span_ids = incident.context.get("exemplar_span_ids") or []
        links = []
        for n, trace_hex in enumerate(trace_ids[:MAX_LINKS]):
            span_hex = span_ids[n] if n < len(span_ids) and span_ids[n] else ""
            try:
                context = _context(int(trace_hex, 16), int(span_hex, 16) if span_hex else 1, remote=True)
            except ValueError:
                continue
            links.append(Link(context, {"otel_ai.link": "exemplar failing request"}))
        return links

    @staticmethod
    def _detect_start(incident: Incident) -> int:
        """Detection runs from the start of the first slot over the threshold to the open.
        Samples are stamped with their slot's end; their spacing is the slot width."""
        threshold = incident.data.get("threshold")
        samples = incident.context.get("recent_samples") or []
        times = [parse_rfc3339(p.get("timestamp")) for p in samples]
        slot = times[1] - times[0] if len(times) > 1 and times[0] and times[1] else DEFAULT_SLOT_NS
        for sample, at in zip(samples, times):
            value = sample.get("value")
            if isinstance(value, (int, float)) and isinstance(threshold, (int, float)) and value >= threshold and at:
                return min(at - slot, incident.opened_at_ns)
        return incident.opened_at_ns

    # ---- log events ----
    def _event(self, incident: Incident) -> None:
        trace_id, root_id = incident_trace_ids(incident.id, incident.problem_id)
        context = set_span_in_context(NonRecordingSpan(_context(trace_id, root_id)))
        self.logger.emit(
            timestamp=incident.updated_at_ns, context=context, event_name=f"otel_ai.incident.{incident.last_change}",
            body=incident.summary, attributes={**self._attributes(incident), "incident.change": incident.last_change,
                                               "incident.version": incident.version,
                                               "incident.acknowledged_by": incident.acknowledged_by or ""})


def _context(trace_id: int, span_id: int, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _root_name(incident: Incident) -> str:
    return f"incident {incident.type} {incident.subject.label()}"

