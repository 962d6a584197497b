"""Wiring of one running otel-ai: store, exporters, pipeline, receivers, admin."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from otel_ai.admin import AdminServer, Request, Response
from otel_ai.analysis.budget import Budget, Refusal
from otel_ai.config import Settings
from otel_ai.exporters.claude import ClaudeAnalyzer
from otel_ai.exporters.console import ConsoleExporter
from otel_ai.exporters.jsonl import JsonlExporter
from otel_ai.exporters.otlp_incidents import (
    OtlpIncidentExporter,
    default_exporters,
)
from otel_ai.exporters.rollback_webhook import RollbackWebhook
from otel_ai.exporters.slack import SlackNotifier
from otel_ai.notify.admin_routes import LifecycleRoutes
from otel_ai.notify.delivery import SlackDelivery, make_client
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.silences import Silences
from otel_ai.notify.slack_actions import SlackActionVerifier
from otel_ai.otel_metrics import OtelMetricsBridge, default_metric_exporter
from otel_ai.otlp_env import otlp_export_configured
from otel_ai.page.routes import IncidentPage
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.receiver.http_server import OtlpHttpReceiver
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Secrets come from the environment only, never from config files."""
    anthropic_api_key: str = ""
    anthropic_base_url: str | None = None  # None: the SDK reads ANTHROPIC_BASE_URL itself
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_api_url: str | None = None
    otlp_export: bool = False  # an OTEL_EXPORTER_OTLP_*ENDPOINT is set: send incidents back as traces/events

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(anthropic_api_key=env.get("ANTHROPIC_API_KEY", ""),
                   slack_bot_token=env.get("SLACK_BOT_TOKEN", ""),
                   slack_signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
                   slack_api_url=env.get("SLACK_API_URL") or None, otlp_export=otlp_export_configured(env))


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
        exporters: list = [self.analyzer]
        self.otlp = OtlpIncidentExporter(*default_exporters()) if creds.otlp_export else None
        self.otel_metrics = None
        if self.otlp is not None:
            exporters.append(self.otlp)
            self.otel_metrics = OtelMetricsBridge(self.metrics, default_metric_exporter())
        self.outbox = Outbox(self.store)
        self.silences = Silences(self.store)
        self.delivery = self._slack(creds, exporters)
        if settings.actions.rollback_webhook:
            exporters.append(RollbackWebhook(settings))
        if incidents_jsonl:
            exporters.append(JsonlExporter(incidents_jsonl))
        if console:
            exporters.append(ConsoleExporter(sys.stderr))
        self.exporters = exporters
        self.pipeline = Pipeline(settings, self.store, exporters, self.metrics, use_wall_clock=use_wall_clock)
        wire_analyzer(self.analyzer, self.pipeline)
        r = settings.receiver
        tls = dict(tls_cert_file=r.tls_cert_file, tls_key_file=r.tls_key_file, bearer_token=r.bearer_token)
        self.grpc = OtlpGrpcReceiver(self.pipeline, self.metrics, host=r.host, port=r.grpc_port,
                                     max_request_bytes=r.max_request_bytes, **tls)
        self.http = OtlpHttpReceiver(self.pipeline, self.metrics, host=r.host, port=r.http_port,
                                     max_request_bytes=r.max_request_bytes, **tls)
        self.admin = AdminServer(self.store, self.metrics, host=settings.admin.host, port=settings.admin.port,
                                 ready=self._ready, token=settings.admin.token)
        self.admin.add_route("POST", r"/api/incidents/(?P<id>[^/]+)/analyze", self._analyze, private=True)
        verifier = SlackActionVerifier(creds.slack_signing_secret) if creds.slack_signing_secret else None
        LifecycleRoutes(self.pipeline.incidents, self.silences, verifier).register(self.admin)
        IncidentPage(self.store, self.pipeline.incidents, settings.admin.trace_url).register(self.admin)
        self.ports: Ports | None = None
        self._started = False

    def _slack(self, creds: Credentials, exporters: list) -> SlackDelivery | None:
        """The Slack notifier and its delivery worker, when a token and a channel are set."""
        rules = self.settings.slack
        channels = {rules.channel_for(s) for s in ("critical", "warning", "info")}
        if not creds.slack_bot_token or None in channels:
            if creds.slack_bot_token:
                log.warning("SLACK_BOT_TOKEN is set but not every severity has a channel "
                            "(SLACK_INCIDENT_CHANNEL or slack.channels); Slack is off")
            return None
        delivery = SlackDelivery(self.settings, self.outbox, self.store,
                                 make_client(creds.slack_bot_token, creds.slack_api_url), self.metrics)
        exporters.append(SlackNotifier(self.settings, self.outbox, self.silences, self.metrics, wake=delivery.wake))
        if self.otlp is not None:
            delivery.on_posted = self.otlp.notified
        return delivery

    def _ready(self) -> bool:
        return self._started and self.pipeline.queue_depth() < self.settings.receiver.queue_batches

    def _analyze(self, request: Request) -> Response:
        """Re-run the analysis of one incident now (what `otel-ai analyze ID` calls)."""
        incident = self.store.get(request.params["id"])
        if incident is None:
            return Response.error(404, f"incident not found: {request.params['id']}")
        updated = self.pipeline.incidents.attach_analysis(incident.id, self.analyzer.analyze(incident))
        return Response.json(200, (updated or incident).snapshot())

    def start(self) -> Ports:
        self.pipeline.start()
        resumed = self.analyzer.resume(self.pipeline.incidents.watched())
        if resumed:
            log.info("queued %d restored incidents that were never analyzed", resumed)
        if self.delivery is not None:
            self.delivery.start()  # first delivers what a previous run left in the outbox
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
        self.pipeline.stop()
        self.analyzer.flush(timeout_s=grace_s)
        if self.delivery is not None:
            self.delivery.stop()  # what is left stays in the outbox for the next start
        self.admin.stop()
        for exporter in self.exporters:
            exporter.shutdown()
        if self.otel_metrics is not None:
            self.otel_metrics.shutdown()
        self.store.close()


def build_analyzer(settings: Settings, store: IncidentStore, metrics: SelfMetrics | None = None,
                   api_key: str | None = None, base_url: str | None = None) -> ClaudeAnalyzer:
    """The analyzer with its budget, whose spend is kept in the incident store."""
    return ClaudeAnalyzer(settings, Budget(settings.budget, store), metrics, api_key=api_key, base_url=base_url)


def wire_analyzer(analyzer: ClaudeAnalyzer, pipeline: Pipeline) -> None:
    """Results, related incidents and the budget alert all go through the incident stage."""
    incidents = pipeline.incidents
    budget = analyzer.budget
    analyzer.on_result = incidents.attach_analysis
    analyzer.related = incidents.related

    def budget_alert(refusal: Refusal) -> None:
        incidents.raise_cost_alert(budget.spent_today(), budget.rules.max_cost_per_day, budget.day_end_ns(),
                                   refusal.detail)

    analyzer.on_budget_alert = budget_alert
