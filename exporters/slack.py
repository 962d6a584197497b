"""The Slack notifier: Alertmanager-style policy in front of a durable outbox.

As an exporter it decides, per incident change, what Slack should show, and writes that
to the outbox (otel_ai/notify/outbox.py) in the same step; otel_ai/notify/delivery.py
sends it. The incident stage already gates it: shadow mode and incidents below
minConfidence never reach a notifier.

Policy:
- one message per incident for its whole life; every change brings it up to date
  (collapsing while Slack is slow or down), and the timeline goes in its thread;
- group_wait: the first message waits a moment so that related incidents can join it;
- grouping: incidents with one root cause (a failing or slow dependency) share the
  message of the first one, as "related", instead of paging again;
- silences mute matching incidents; repeat_interval reminders live in delivery.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from otel_ai.analysis.redact import redactor_from_settings
from otel_ai.config import Settings
from otel_ai.model import DEPENDENCY, Incident
from otel_ai.notify.blocks import render_thread_note
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.silences import Silences
from otel_ai.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

GROUPING_KEYS = ("dependency.failed", "dependency.slow")
MIN_GROUPING_SHARE = 0.5  # the dependency must be in at least half of the bad requests
MAX_TRACKED = 10_000
MAX_RELATED_LISTED = 20


def group_key(incident: Incident) -> str | None:
    """Incidents with the same key have one root cause: a dependency failing or slowing down."""
    if incident.subject.kind == DEPENDENCY:
        return f"dependency:{incident.subject.service}"
    top = incident.suspects[0] if incident.suspects else None
    if top and top.get("key") in GROUPING_KEYS and (top.get("bad_share") or 0) >= MIN_GROUPING_SHARE:
        return f"dependency:{top.get('value')}"
    return None


def _related_line(incident: Incident, redactor) -> dict:
    return redactor.data({"id": incident.id, "type": incident.type, "service": incident.subject.service,
                          "route": incident.subject.route, "summary": incident.summary, "status": incident.status})


class SlackNotifier:
    notifies = True

    def __init__(self, settings: Settings, outbox: Outbox, silences: Silences, metrics: SelfMetrics | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, wake: Callable[[], None] = lambda: None) -> None:
        self.rules = settings.slack
        self.outbox = outbox
        self.silences = silences
        self.metrics = metrics or SelfMetrics()
        self.clock_ns = clock_ns
        self.wake = wake  # nudges the delivery worker
        self._lock = threading.Lock()
        self._leads: OrderedDict[str, str] = OrderedDict()  # group key -> lead incident id (open leads)
        self._member_of: OrderedDict[str, str] = OrderedDict()  # member incident id -> lead id
        self._related: dict[str, list[dict]] = {}  # lead id -> its related incidents
        self.redactor = redactor_from_settings(settings.analysis.redaction)  # notes leave the process too

    def export(self, incident: Incident) -> None:
        change = incident.last_change
        now = self.clock_ns()
        with self._lock:
            lead = self._member_of.get(incident.id)
            if lead is not None:
                self._member_changed(incident, lead, now)
            elif change in ("opened", "reopened"):
                self._opened(incident, now)
            elif self.outbox.has_message_or_pending(incident.id):
                self._changed(incident, now)
        self.wake()

    def _opened(self, incident: Incident, now: int) -> None:
        silence = self.silences.silencing(incident)
        if silence is not None:
            self.metrics.notifications.labels(outcome="silenced").inc()
            log.info("incident %s silenced by %s (%s)", incident.id, silence.id, silence.comment)
            return
        key = group_key(incident)
        lead = self._leads.get(key) if key else None
        if lead is not None and lead != incident.id:
            self._join(incident, lead, now)
            return
        if key:
            self._remember(self._leads, key, incident.id)
        first = not self.outbox.has_message_or_pending(incident.id)
        due = now + int(self.rules.group_wait * 1e9) if first else now
        self.outbox.put_message(incident.id, incident.version, due, self._payload(incident.id))
        if incident.last_change == "reopened":
            self._note(incident, now)
        self.metrics.notifications.labels(outcome="queued").inc()

    def _join(self, incident: Incident, lead: str, now: int) -> None:
        self._remember(self._member_of, incident.id, lead)
        related = self._related.setdefault(lead, [])
        related.append(_related_line(incident, self.redactor))
        del related[:-MAX_RELATED_LISTED]
        self.outbox.put_note(lead, f"related:{incident.id}:{incident.version}", incident.version, now,
                             {"text": f"🔗 Related: {render_thread_note('opened', self._snapshot(incident))}"})
        self.outbox.put_message(lead, 0, now, self._payload(lead))
        self.metrics.notifications.labels(outcome="grouped").inc()

    def _member_changed(self, incident: Incident, lead: str, now: int) -> None:
        for line in self._related.get(lead, []):
            if line["id"] == incident.id:
                line.update(_related_line(incident, self.redactor))
        if incident.last_change in ("resolved", "reopened"):
            self.outbox.put_note(lead, f"related:{incident.id}:{incident.version}", incident.version, now,
                                 {"text": f"🔗 Related: {render_thread_note(incident.last_change, self._snapshot(incident))}"})
            self.outbox.put_message(lead, 0, now, self._payload(lead))

    def _changed(self, incident: Incident, now: int) -> None:
        change = incident.last_change
        if change == "resolved" and not self.rules.send_resolved:
            return
        self.outbox.put_message(incident.id, incident.version, now, self._payload(incident.id))
        if change in ("analyzed", "acknowledged", "resolved", "reopened"):
            self._note(incident, now)
        if change == "resolved":
            self._forget_lead(incident.id)

    def _note(self, incident: Incident, now: int) -> None:
        text = render_thread_note(incident.last_change, self._snapshot(incident), user=incident.acknowledged_by)
        self.outbox.put_note(incident.id, f"{incident.last_change}:{incident.version}", incident.version, now,
                             {"text": text})

    def _snapshot(self, incident: Incident) -> dict:
        return self.redactor.data(incident.snapshot())

    def _payload(self, incident_id: str) -> dict:
        return {"related": list(self._related.get(incident_id, []))}

    def _forget_lead(self, incident_id: str) -> None:
        for key, lead in list(self._leads.items()):
            if lead == incident_id:
                del self._leads[key]
        self._related.pop(incident_id, None)
        for member, lead in list(self._member_of.items()):
            if lead == incident_id:
                del self._member_of[member]

    @staticmethod
    def _remember(mapping: OrderedDict, key: str, value: str) -> None:
        mapping[key] = value
        if len(mapping) > MAX_TRACKED:
            mapping.popitem(last=False)

    def shutdown(self) -> None:
        pass
