"""A generic webhook: a JSON POST in Alertmanager's webhook payload shape.

Receivers written for Alertmanager (version 4: status, groupKey, alerts[] with labels,
annotations, startsAt, endsAt, generatorURL, fingerprint) work unchanged. Each
notification is one group with one alert (its lead incident; incidents grouped under it
are listed in the `related` annotation). It is POSTed when it starts firing, on each
update (analysis, acknowledgement, related incidents), when it resolves, and again every
repeatInterval while it fires, as Alertmanager repeats.

With $AI_WEBHOOK_SECRET set, the header `X-Otel-AI-Signature-256: sha256=<hex>` carries
the HMAC-SHA256 of the raw body under that secret. Each POST also carries an
`Idempotency-Key` derived from its content, so a resend after a crash mid-call is
recognisable: receivers that honour it see every notification exactly once.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import requests

from otel_ai.config import Settings
from otel_ai.notify.blocks import details_link
from otel_ai.notify.outbox import MESSAGE, Entry
from otel_ai.notifiers.base import Sent, http_post

SIGNATURE_HEADER = "X-Otel-AI-Signature-256"
NOT_ENDED = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
RECEIVER = "otel-ai"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alertmanager_payload(key: str, snapshot: dict[str, Any], related: list[dict],
                         details_url: str | None) -> dict[str, Any]:
    status = "resolved" if snapshot.get("status") == "resolved" else "firing"
    labels = {k: str(v) for k, v in {
        "alertname": snapshot.get("type"), "severity": snapshot.get("severity"), "service": snapshot.get("service"),
        "method": snapshot.get("method"), "route": snapshot.get("route"), "subject_kind": snapshot.get("subject_kind"),
        "incident_id": snapshot.get("id"),
    }.items() if v}
    analysis = snapshot.get("analysis") if isinstance(snapshot.get("analysis"), dict) else {}
    causes = [c for c in analysis.get("root_causes") or [] if isinstance(c, dict)]
    suspects = [s for s in snapshot.get("suspects") or [] if isinstance(s, dict)][:3]
    annotations = {k: v for k, v in {
        "summary": snapshot.get("summary"),
        "description": analysis.get("summary"),
        "root_cause": causes[0].get("cause") if causes else None,
        "suspects": "; ".join(f"{s.get('key')}={s.get('value')}" for s in suspects),
        "exemplar_trace_ids": " ".join((snapshot.get("context") or {}).get("exemplar_trace_ids") or []),
        "acknowledged_by": snapshot.get("acknowledged_by"),
        "confidence": f"{snapshot.get('confidence')}",
        "related": "; ".join(f"{r.get('type')} {r.get('service')} {r.get('route')}" for r in related[:10]),
    }.items() if v}
    alert = {
        "status": status, "labels": labels, "annotations": {k: str(v) for k, v in annotations.items()},
        "startsAt": snapshot.get("opened_at"),
        "endsAt": snapshot.get("resolved_at") if status == "resolved" else NOT_ENDED,
        "generatorURL": details_url or "",
        "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16],
    }
    group_labels = {"incident": key}
    return {"version": "4", "groupKey": f"{{}}:{{incident=\"{key}\"}}", "truncatedAlerts": 0, "status": status,
            "receiver": RECEIVER, "groupLabels": group_labels, "commonLabels": labels,
            "commonAnnotations": alert["annotations"], "externalURL": details_url or "", "alerts": [alert]}


class WebhookNotifier:
    name = "webhook"
    notifies = True

    def __init__(self, settings: Settings, url: str, secret: str = "", session: requests.Session | None = None) -> None:
        self.rules = settings.webhook
        self.url = url
        self.secret = secret
        self.session = session or requests.Session()

    def send(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        if entry.kind != MESSAGE and entry.payload.get("change") != "reminder":
            return Sent(None)  # the timeline is Slack's; a reminder is a repeat of the state
        snapshot = entry.payload.get("incident") or {}
        payload = alertmanager_payload(entry.incident_id, snapshot, entry.payload.get("related") or [],
                                       details_link(self.rules.details_url, snapshot))
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "otel-ai",
                   # A reminder repeats the content on purpose: its note key keeps it apart.
                   "Idempotency-Key": f"{entry.incident_id}-"
                                      f"{hashlib.sha256(body + entry.note_key.encode()).hexdigest()[:24]}"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        http_post(self.session, self.url, self.rules.timeout, data=body, headers=headers)
        created = ref is None
        return Sent({"status": payload["status"]}, created=created,
                    detail={"messaging.system": "webhook"} if created else {})

    def reconcile(self, entry: Entry, ref: dict[str, Any] | None) -> Sent | None:
        return None  # the resend carries the same Idempotency-Key

    def shutdown(self) -> None:
        self.session.close()
