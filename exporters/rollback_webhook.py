"""Active mode's one action: ask your deploy system to roll back a bad version.

The seed's third rollout week lets the tool act. Acting on model output is exactly what
untrusted telemetry could steer, so this never takes anything from the answer but the
yes/no `rollback_needed`: the service and version come from otel-ai's own evidence (the
top suspect is service.version=X and X was first seen shortly before onset), the URL
from configuration, and it fires at most once per incident, only with AI_MODE=active and
detection confidence at or above actions.minConfidence.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections import OrderedDict
from typing import Any

from otel_ai.config import Settings
from otel_ai.model import ROUTE, Incident

log = logging.getLogger(__name__)

FIRED_LIMIT = 10_000


def rollback_target(incident: Incident) -> dict[str, str] | None:
    """(service, version) to roll back, from the evidence alone; None if it does not show one."""
    if incident.subject.kind != ROUTE or not incident.suspects:
        return None
    top = incident.suspects[0]
    new = {v.get("version") for v in incident.context.get("new_versions", [])}
    if top.get("key") != "service.version" or top.get("value") not in new:
        return None
    return {"service": incident.subject.service, "version": str(top["value"])}


class RollbackWebhook:
    """A sink: it sees every change and acts only in mode "active" (see decide)."""

    name = "rollback"

    def __init__(self, settings: Settings, timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.url = settings.actions.rollback_webhook
        self.timeout_s = timeout_s
        self._fired: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def export(self, incident: Incident) -> None:
        payload = self.decide(incident)
        if payload is None:
            return
        worker = threading.Thread(target=self._post, args=(payload,), name="otel-ai-rollback", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [worker]
        worker.start()

    def decide(self, incident: Incident) -> dict[str, Any] | None:
        analysis = incident.analysis or {}
        if (not self.url or self.settings.mode != "active" or incident.last_change != "analyzed"
                or analysis.get("rollback_needed") is not True or incident.below_min_confidence
                or incident.confidence < self.settings.actions.min_confidence):
            return None
        target = rollback_target(incident)
        if target is None:
            log.info("incident %s: rollback recommended, but the evidence shows no new version; not acting",
                     incident.id)
            return None
        with self._lock:
            if incident.id in self._fired:
                return None
            self._fired[incident.id] = None
            if len(self._fired) > FIRED_LIMIT:
                self._fired.popitem(last=False)
        return {"action": "rollback", "incident_id": incident.id, "incident_type": incident.type,
                **target, "detection_confidence": round(incident.confidence, 3),
                "analysis_source": analysis.get("source")}

    def _post(self, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                log.warning("rollback of %s %s requested for incident %s: HTTP %d", payload["service"],
                            payload["version"], payload["incident_id"], response.status)
        except OSError as exc:
            log.error("rollback webhook for incident %s failed: %s", payload["incident_id"], exc)

    def shutdown(self) -> None:
        for worker in self._threads:
            worker.join(timeout=self.timeout_s)
