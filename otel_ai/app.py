"""Wiring of one running otel-ai: store, pipeline, analysis, notification policy and notifiers, sinks, receivers, admin."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from otel_ai.admin import AdminServer, Request, Response
from otel_ai.analysis.budget import Budget
from otel_ai.analysis.claude import ClaudeAnalyzer
from otel_ai.analysis.stage import AnalysisStage
from otel_ai.config import Settings
from otel_ai.exporters.console import ConsoleExporter
from otel_ai.exporters.jsonl import JsonlExporter
from otel_ai.exporters.otlp_incidents import (
    OtlpIncidentExporter,
    default_exporters,
)
from otel_ai.exporters.rollback_webhook import RollbackWebhook
from otel_ai.notifiers.base import Notifier
from otel_ai.notifiers.pagerduty import PagerDutyNotifier
from otel_ai.notifiers.slack import SlackNotifier, make_client
from otel_ai.notifiers.webhook import WebhookNotifier
from otel_ai.notify.admin_routes import LifecycleRoutes
from otel_ai.notify.delivery import Delivery
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.policy import NotificationPolicy
from otel_ai.notify.silences import Silences
from otel_ai.notify.slack_actions import SlackActionVerifier
from otel_ai.otel_metrics import OtelMetricsBridge, default_metric_exporter
from otel_ai.otlp_env import otlp_export_configured
from otel_ai.page.routes import IncidentPage
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.receiver.http_server import OtlpHttpReceiver
from otel_ai.runtime import tune_allocation
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.stages import Consumer
from otel_ai.store import IncidentStore
from otel_ai.telemetry_routes import TelemetryRoutes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Secrets come from the environment only, never from config files."""
    anthropic_api_key: str = ""
    anthropic_base_url: str | None = None  # None: the SDK reads ANTHROPIC_BASE_URL itself
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_api_url: str | None = None
    pagerduty_routing_key: str = ""
    webhook_secret: str = ""  # signs webhook bodies (HMAC-SHA256) when set
    otlp_export: bool = False  # an OTEL_EXPORTER_OTLP_*ENDPOINT is set: send incidents back as traces/events

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(anthropic_api_key=env.get("ANTHROPIC_API_KEY", ""),
                   slack_bot_token=env.get("SLACK_BOT_TOKEN", ""),
                   slack_signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
                   slack_api_url=env.get("SLACK_API_URL") or None,
                   pagerduty_routing_key=env.get("PAGERDUTY_ROUTING_KEY", ""),
                   webhook_secret=env.get("AI_WEBHOOK_SECRET", ""), otlp_export=otlp_export_configured(env))


@dataclass(frozen=True)
class NotifierState:
    name: str
    configured: bool
    sending: bool
    why: str  # "on", or why it sends nothing

    def line(self) -> str:
        return f"{self.name}: {self.why}"


def build_notifiers(settings: Settings, creds: Credentials) -> tuple[list[Notifier], list[NotifierState]]:
    """The notifiers the configuration turns on, and each known notifier's state for the
    banner and `otel-ai check`: on, off (not configured), or configured but silent."""
    notifiers: list[Notifier] = []
    states = []
    missing = [s for s in ("critical", "warning", "info") if not settings.slack.channel_for(s)]
    if not creds.slack_bot_token:
        states.append(("slack", False, "off (SLACK_BOT_TOKEN not set)"))
    elif missing:
        states.append(("slack", True, f"off: SLACK_BOT_TOKEN is set but no channel for {', '.join(missing)} "
                                      "incidents (SLACK_INCIDENT_CHANNEL or slack.channels)"))
    else:
        notifiers.append(SlackNotifier(settings, make_client(creds.slack_bot_token, creds.slack_api_url)))
        states.append(("slack", True, f"on → {settings.slack.channel_for('critical')}"))
    if not creds.pagerduty_routing_key:
        states.append(("pagerduty", False, "off (PAGERDUTY_ROUTING_KEY not set)"))
    else:
        notifiers.append(PagerDutyNotifier(settings, creds.pagerduty_routing_key))
        states.append(("pagerduty", True, f"on → {settings.pagerduty.events_url}"))
    if not settings.webhook.url:
        states.append(("webhook", False, "off (AI_WEBHOOK_URL not set)"))
    else:
        notifiers.append(WebhookNotifier(settings, settings.webhook.url, creds.webhook_secret))
        signed = "signed" if creds.webhook_secret else "unsigned: set AI_WEBHOOK_SECRET to sign"
        states.append(("webhook", True, f"on → {settings.webhook.url} ({signed})"))
    on = {n.name for n in notifiers}
    routed = {name for route in settings.notify.routes for name in route.notifiers}
    result = []
    for name, configured, why in states:
        sending = name in on
        if sending and settings.mode == "shadow":
            sending, why = False, "configured, but AI_MODE=shadow: nothing will be sent"
        elif sending and settings.notify.routes and name not in routed:
            sending, why = False, "configured, but no notify.routes entry names it: nothing will be sent"
        result.append(NotifierState(name, configured, sending, why))
    return notifiers, result


@dataclass
class Ports:
    grpc: int
    http: int
    admin: int


class App:
    def __init__(self, settings: Settings, data_dir: str | Path, incidents_jsonl: str | Path | None = None,
                 console: bool = True, use_wall_clock: bool = True, credentials: Credentials | None = None):
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.metrics = SelfMetrics()
        creds = credentials if credentials is not None else Credentials.from_env()
        self.store = IncidentStore(self.data_dir / "incidents.db")
        self.analyzer = build_analyzer(settings, self.store, self.metrics, creds.anthropic_api_key,
                                       creds.anthropic_base_url)
        self.analysis = AnalysisStage(self.analyzer, submit=lambda event: self.pipeline.submit(event))
        self.outbox = Outbox(self.store)
        self.silences = Silences(self.store)
        notifiers, self.notifier_states = build_notifiers(settings, creds)
        self.deliveries = {n.name: Delivery(n, self.outbox, self.metrics) for n in notifiers}
        self.policy = NotificationPolicy(settings, notifiers, self.outbox, self.silences, self.store, self.metrics,
                                         wake=lambda name: self.deliveries[name].wake())
        self.otlp = OtlpIncidentExporter(*default_exporters(), redaction=settings.analysis.redaction) \
            if creds.otlp_export else None
        self.otel_metrics = None
        sinks: list[Consumer] = []
        if self.otlp is not None:
            sinks.append(self.otlp)
            self.otel_metrics = OtelMetricsBridge(self.metrics, default_metric_exporter(),
                                                  redaction=settings.analysis.redaction)
            for delivery in self.deliveries.values():
                delivery.on_created = self.otlp.notified
        if settings.actions.rollback_webhook:
            sinks.append(RollbackWebhook(settings))
        if incidents_jsonl:
            sinks.append(JsonlExporter(incidents_jsonl))
        if console:
            sinks.append(ConsoleExporter(sys.stderr))
        self.pipeline = Pipeline(settings, self.store, [self.analysis, self.policy, *sinks], self.metrics,
                                 use_wall_clock=use_wall_clock)
        r = settings.receiver
        tls = dict(tls_cert_file=r.tls_cert_file, tls_key_file=r.tls_key_file, bearer_token=r.bearer_token)
        self.grpc = OtlpGrpcReceiver(self.pipeline, self.metrics, host=r.host, port=r.grpc_port,
                                     max_request_bytes=r.max_request_bytes, metrics_consumer=self.pipeline, **tls)
        self.http = OtlpHttpReceiver(self.pipeline, self.metrics, host=r.host, port=r.http_port,
                                     max_request_bytes=r.max_request_bytes, metrics_consumer=self.pipeline, **tls)
        self.admin = AdminServer(self.store, self.metrics, host=settings.admin.host, port=settings.admin.port,
                                 ready=self._ready, token=settings.admin.token)
        self.admin.add_route("POST", r"/api/incidents/(?P<id>[^/]+)/analyze", self._analyze, private=True)
        verifier = SlackActionVerifier(creds.slack_signing_secret) if creds.slack_signing_secret else None
        LifecycleRoutes(self.pipeline.incidents, self.silences, verifier, self.pipeline.persisted).register(self.admin)
        IncidentPage(self.store, self.pipeline.incidents, settings.admin.trace_url,
                     self.pipeline.persisted).register(self.admin)
        TelemetryRoutes(self.pipeline).register(self.admin)
        self.ports: Ports | None = None
        self._started = False

    def banner(self) -> list[str]:
        """Where notifications go, for the start-up banner: the mode and each notifier's state."""
        mode = self.settings.mode
        lines = [f"mode {mode}" + {"shadow": ": incidents are analyzed and recorded, nobody is notified",
                                   "notify": ": every notifier that is on gets incidents at or above minConfidence "
                                             f"{self.settings.min_confidence:g}",
                                   "active": ": notifiers on, and actions: (rollback webhook) may run"}[mode]]
        lines += [f"  {state.line()}" for state in self.notifier_states]
        if mode != "shadow" and not any(state.sending for state in self.notifier_states):
            lines.append("  nothing will be sent: no notifier is on")
        return lines

    def _ready(self) -> bool:
        return self._started and self.pipeline.queue_depth() < self.settings.receiver.queue_batches

    def _analyze(self, request: Request) -> Response:
        """Re-run the analysis of one incident now (what `otel-ai analyze ID` calls)."""
        incident = self.store.get(request.params["id"])
        if incident is None:
            return Response.error(404, f"incident not found: {request.params['id']}")
        analysis = self.analyzer.analyze(incident, self.analysis.open.related(incident))
        updated = self.pipeline.incidents.attach_analysis(incident.id, analysis)
        return Response.json(200, (updated or incident).snapshot())

    def start(self) -> Ports:
        tune_allocation()
        self.pipeline.start()
        watched = self.pipeline.incidents.watched()
        resumed = self.analysis.resume(watched)
        if resumed:
            log.info("queued %d restored incidents that were never analyzed", resumed)
        self.policy.resume(watched)
        self.policy.start()
        for delivery in self.deliveries.values():
            delivery.start()  # first delivers what a previous run left in the outbox
        try:
            self.ports = Ports(grpc=self.grpc.start(), http=self.http.start(), admin=self.admin.start())
        except OSError:
            self.stop(grace_s=0)  # a taken port: release what did start, then say which port
            raise
        self._started = True
        return self.ports

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking spans, drain what was accepted, then close the store."""
        self._started = False
        self.grpc.stop(grace_s)
        self.http.stop(grace_s)
        self.pipeline.stop(grace_s)  # then every stage after it: analysis, policy, sinks
        for delivery in self.deliveries.values():
            delivery.stop()  # what is left stays in the outbox for the next start
        self.admin.stop()
        if self.otel_metrics is not None:
            self.otel_metrics.shutdown()
        self.store.close()


def build_analyzer(settings: Settings, store: IncidentStore, metrics: SelfMetrics | None = None,
                   api_key: str | None = None, base_url: str | None = None) -> ClaudeAnalyzer:
    """The analyzer with its budget, whose spend is kept in the incident store."""
    return ClaudeAnalyzer(settings, Budget(settings.budget, store), metrics, api_key=api_key, base_url=base_url)
