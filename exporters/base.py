"""The one interface every incident sink implements (store, JSONL, console, OTLP, rollback).

Modelled on the OpenTelemetry SDK's SpanExporter: `export` is called once per incident
change, in version order, with the incident as it is after the change, and `shutdown`
once at exit. Each sink runs on its own bounded queue and thread (otel_ai/stages.py):
queueing, ordering and threading belong to the caller, not to each exporter. Sinks
record every change in every mode; paging people is the notifiers' job
(notifiers/base.py), behind the notification policy.
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
