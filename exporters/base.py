"""The one interface every incident sink implements (JSONL, console, Slack, OTLP, ...).

Modelled on the OpenTelemetry SDK's SpanExporter: the pipeline calls `export` once per
incident change, with the incident as it is after the change, and `shutdown` once at exit.
Batching, retries and threading belong to the caller, not to each exporter.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from otel_ai.model import Incident


@runtime_checkable
class IncidentExporter(Protocol):
    def export(self, incident: Incident) -> None:
        """Deliver one incident change; `incident.last_change` says which kind."""
        ...

    def shutdown(self) -> None:
        """Flush and release resources; export is not called afterwards."""
        ...
