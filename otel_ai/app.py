"""Wiring of one running otel-ai: store, exporters, pipeline, receivers, admin."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from otel_ai.admin import AdminServer
from otel_ai.config import Settings
from otel_ai.exporters.console import ConsoleExporter
from otel_ai.exporters.jsonl import JsonlExporter
from otel_ai.pipeline import Pipeline
from otel_ai.receiver.grpc_server import OtlpGrpcReceiver
from otel_ai.receiver.http_server import OtlpHttpReceiver
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore

log = logging.getLogger(__name__)


@dataclass
class Ports:
    grpc: int
    http: int
    admin: int


class App:
    def __init__(self, settings: Settings, data_dir: str | Path, incidents_jsonl: str | Path | None = None,
                 console: bool = True, use_wall_clock: bool = True):
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.metrics = SelfMetrics()
        self.store = IncidentStore(self.data_dir / "incidents.db")
        exporters = []
        if incidents_jsonl:
            exporters.append(JsonlExporter(incidents_jsonl))
        if console:
            exporters.append(ConsoleExporter(sys.stderr))
        self.exporters = exporters
        self.pipeline = Pipeline(settings, self.store, exporters, self.metrics, use_wall_clock=use_wall_clock)
        r = settings.receiver
        tls = dict(tls_cert_file=r.tls_cert_file, tls_key_file=r.tls_key_file, bearer_token=r.bearer_token)
        self.grpc = OtlpGrpcReceiver(self.pipeline, self.metrics, host=r.host, port=r.grpc_port,
                                     max_request_bytes=r.max_request_bytes, **tls)
        self.http = OtlpHttpReceiver(self.pipeline, self.metrics, host=r.host, port=r.http_port,
                                     max_request_bytes=r.max_request_bytes, **tls)
        self.admin = AdminServer(self.store, self.metrics, host=settings.admin.host, port=settings.admin.port,
                                 ready=self._ready)
        self.ports: Ports | None = None
        self._started = False

    def _ready(self) -> bool:
        return self._started and self.pipeline.queue_depth() < self.settings.receiver.queue_batches

    def start(self) -> Ports:
        self.pipeline.start()
        self.ports = Ports(grpc=self.grpc.start(), http=self.http.start(), admin=self.admin.start())
        self._started = True
        return self.ports

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking spans, drain what was accepted, then close the store."""
        self._started = False
        self.grpc.stop(grace_s)
        self.http.stop(grace_s)
        self.pipeline.stop()
        self.admin.stop()
        for exporter in self.exporters:
            exporter.shutdown()
        self.store.close()
