"""The incident store as a sink: each change is saved as the incident's latest state.

Saved off the incident lock like every other sink. The store refuses to go back a
version, so a change that arrives late never overwrites a newer one.
"""
from __future__ import annotations

from otel_ai.model import Incident
from otel_ai.store import IncidentStore


class StoreExporter:
    name = "store"

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def export(self, incident: Incident) -> None:
        self.store.save(incident)

    def shutdown(self) -> None:
        pass  # the app closes the store after every stage has stopped
