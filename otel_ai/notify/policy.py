"""The notification policy: what reaches which notifier, and when. Channel-independent.

It consumes incident changes like any stage after the incident stage (its own queue and
thread), and for each notifier the routes pick (otel_ai/notify/routing.py) it runs
Alertmanager's stages in order, then writes the outcome to the durable outbox in the
same step; each notifier's delivery worker sends it (otel_ai/notify/delivery.py).

- gate: AI_MODE=shadow and incidents below minConfidence never start a notification
  (for notifiers that page); one below minConfidence is still listed on the notification
  its cause already has. It decides on every change: an incident whose confidence
  rises past minConfidence later is notified then. A notification that exists keeps
  being updated, so a page is always resolved.
- inhibit and group: incidents with one cause (otel_ai/notify/cause.py: one problem's
  root, else one failing dependency) share one notification, keyed by the problem, led
  by the cause's own incident if it is open (the calls to a failing dependency, the
  root service's route), else by the most severe (a critical mutes warnings with the
  same cause), else the first. The others are listed as related on it. A
  better lead that arrives during group_wait takes over before anything is sent; later,
  only a more severe one pages on its own.
- silence: matching incidents are skipped on every change while the silence lasts,
  reminders included; the next change after it is lifted brings everything up to date.
- group_wait: a new notification waits this long, so related incidents can join it.
- dedup: a notification's pending update collapses to its latest state (the outbox).
- repeat: open, unacknowledged, unsilenced incidents are reminded every repeatInterval.

Change kinds it does not know (a later "recovering", say) are plain updates of the
existing notification, never a new page. Everything written is redacted first.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_ai.analysis.redact import redact_incident, redactor_from_settings
from otel_ai.config import Settings
from otel_ai.model import Incident
from otel_ai.notify.cause import cause_key, is_the_cause, notification_key, rank, severity_rank
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.routing import Router
from otel_ai.notify.silences import Silences
from otel_ai.notifiers.base import Notifier
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore
from otel_ai.timefmt import NS_PER_S

log = logging.getLogger(__name__)

NOTE_CHANGES = ("analyzed", "acknowledged", "resolved", "reopened")
MEMBER_NOTE_CHANGES = ("resolved", "reopened")
MAX_TRACKED = 10_000
MAX_SNAPSHOTS = 1_000  # whole incidents (context and all): the recently changed ones suffice
MAX_RELATED_LISTED = 20
REMINDER_CHECK_S = 30.0


RELATED_FIELDS = ("id", "type", "subject_kind", "service", "method", "route", "summary", "status", "severity",
                  "version", "opened_at", "resolved_at", "problem_id", "root_cause")


def related_line(incident: Incident) -> dict[str, Any]:
    """How a member appears in its lead's notification (pass it redacted)."""
    snapshot = incident.snapshot()
    return {key: snapshot[key] for key in RELATED_FIELDS}


@dataclass
class _Group:
    lead: Incident
    members: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)


class _Groups:
    """One notifier's groups: cause key -> the group, and which group each member is in."""

    def __init__(self) -> None:
        self.by_cause: OrderedDict[str, _Group] = OrderedDict()
        self.member_of: OrderedDict[str, str] = OrderedDict()

    def lead(self, cause: str, incident: Incident) -> _Group:
        group = self.by_cause[cause] = _Group(incident)
        _bound(self.by_cause)
        return group

    def join(self, cause: str, group: _Group, line: dict[str, Any]) -> None:
        group.members[line["id"]] = line
        while len(group.members) > MAX_RELATED_LISTED:
            group.members.popitem(last=False)
        self.member_of[line["id"]] = cause
        _bound(self.member_of)

    def dissolve(self, lead_id: str) -> None:
        for cause, group in list(self.by_cause.items()):
            if group.lead.id == lead_id:
                del self.by_cause[cause]
                for member in group.members:
                    self.member_of.pop(member, None)


def _bound(mapping: OrderedDict, limit: int = MAX_TRACKED) -> None:
    while len(mapping) > limit:
        mapping.popitem(last=False)


class NotificationPolicy:
    name = "notify"

    def __init__(self, settings: Settings, notifiers: Iterable[Notifier], outbox: Outbox, silences: Silences,
                 store: IncidentStore, metrics: SelfMetrics | None = None, clock_ns: Callable[[], int] = time.time_ns,
                 wake: Callable[[str], None] = lambda name: None) -> None:
        notifiers = list(notifiers)
        for notifier in notifiers:
            if not isinstance(notifier, Notifier):  # e.g. without `notifies`: refuse rather than page in shadow mode
                raise TypeError(f"{notifier!r} does not implement the Notifier interface (notifiers/base.py)")
        self.settings = settings
        self.notifiers = {n.name: n for n in notifiers}
        self.router = Router(settings.notify.routes, list(self.notifiers))
        self.outbox = outbox
        self.silences = silences
        self.store = store
        self.metrics = metrics or SelfMetrics()
        self.clock_ns = clock_ns
        self.wake = wake
        self.redactor = redactor_from_settings(settings.analysis.redaction)  # one redaction for all outbound
        self._groups = {name: _Groups() for name in self.notifiers}
        # Which incident each notification shows (notification key -> incident id), per
        # notifier: the one whose changes update it, whatever groups its cause has had.
        self._message_lead: dict[str, OrderedDict[str, str]] = {name: OrderedDict() for name in self.notifiers}
        # The newest snapshot of every incident seen: a group keeps the lead as it was when it
        # joined, and a member's change must not put that older state back on the message.
        self._newest: OrderedDict[str, Incident] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._repeater: threading.Thread | None = None

    # ---- the stage: one incident change ----
    def export(self, incident: Incident) -> None:
        now = self.clock_ns()
        touched = []
        with self._lock:
            self._remember(incident)
            routed = self.router.notifiers_for(incident)
            for name in self.notifiers:
                # A notifier that has the incident keeps getting its changes, even if a later change
                # (a new severity, say) would route it elsewhere: every page gets its resolve.
                if name not in routed and not self._has(name, incident):
                    continue
                outcome = self._decide(name, incident, now)
                if outcome is not None:
                    self.metrics.notifications.labels(notifier=name, outcome=outcome).inc()
                    touched.append(name)
        for name in touched:
            self.wake(name)

    def _remember(self, incident: Incident) -> None:
        known = self._newest.get(incident.id)
        if known is None or known.version <= incident.version:
            self._newest[incident.id] = incident
            self._newest.move_to_end(incident.id)
            _bound(self._newest, MAX_SNAPSHOTS)

    def _has(self, name: str, incident: Incident) -> bool:
        return incident.id in self._groups[name].member_of or self.outbox.has_notification(
            name, notification_key(incident))

    def _leads(self, name: str, groups: _Groups, incident: Incident) -> bool:
        """The incident's notification exists and is its own to update: not its problem's
        while another member leads it."""
        key = notification_key(incident)
        if not self.outbox.has_notification(name, key):
            return False
        shown = self._message_lead[name].get(key)
        if shown is not None:  # one incident's state per message: its problem's lead's
            return shown == incident.id
        if incident.problem_id is None:
            return True
        cause = cause_key(incident)
        group = groups.by_cause.get(cause) if cause else None
        return group is None or group.lead.id == incident.id

    def eligible(self, incident: Incident) -> bool:
        """The gate: shadow mode and low-confidence incidents are recorded, nobody is paged."""
        return self.settings.mode != "shadow" and not incident.below_min_confidence

    def _decide(self, name: str, incident: Incident, now: int) -> str | None:
        groups = self._groups[name]
        if self._message_lead[name].get(notification_key(incident)) == incident.id:
            groups.member_of.pop(incident.id, None)  # it leads the message: never a line on it
        if incident.id in groups.member_of:
            if self.silences.silencing(incident) is not None:
                return "silenced"
            if self._member_changed(name, groups, incident, now):
                return "grouped"
        if self._leads(name, groups, incident):
            return self._changed(name, groups, incident, now)
        if incident.status == "resolved":
            return None
        may_lead = self.eligible(incident) or not self.notifiers[name].notifies
        if not may_lead and self._group_of(groups, incident) is None:
            return "gated"
        if self.silences.silencing(incident) is not None:
            return "silenced"
        return self._first(name, groups, incident, now, may_lead)

    @staticmethod
    def _group_of(groups: _Groups, incident: Incident) -> _Group | None:
        cause = cause_key(incident)
        return groups.by_cause.get(cause) if cause else None

    def _first(self, name: str, groups: _Groups, incident: Incident, now: int, may_lead: bool = True) -> str:
        """An incident without a notification: join its cause's, take it over, or start one.
        One the gate holds back (below minConfidence) is still listed on its problem's
        notification, which exists anyway, but never leads one."""
        cause = cause_key(incident)
        group = groups.by_cause.get(cause) if cause else None
        if group is not None and group.lead.id != incident.id:
            lead = group.lead
            if may_lead and rank(incident) > rank(lead):
                if self.outbox.withdraw(name, notification_key(lead)):
                    self._message_lead[name].pop(notification_key(lead), None)
                    self._take_over(name, groups, cause, group, incident, now)
                    return "queued"
                if severity_rank(incident.severity) > severity_rank(lead.severity):
                    group.lead = incident  # a critical is never muted by a warning that paged first
                    self._open(name, incident, now, group)
                    return "queued"
            line = related_line(self._redacted(incident))
            groups.join(cause, group, line)
            self._member_note(name, group.lead, line, "opened", now)
            self._put_message(name, group.lead, now + self._group_wait_ns(name), group)
            return "inhibited" if is_the_cause(lead) or severity_rank(lead.severity) > severity_rank(
                incident.severity) else "grouped"
        if cause:
            group = groups.lead(cause, incident)
        self._open(name, incident, now, group)
        return "queued"

    def _take_over(self, name: str, groups: _Groups, cause: str, group: _Group, incident: Incident, now: int) -> None:
        """A better lead arrived before the group's notification went out: it leads instead."""
        lines = [related_line(self._redacted(group.lead)),
                 *(line for line in group.members.values() if line["id"] != incident.id)]
        group.lead = incident
        group.members.clear()
        groups.member_of.pop(incident.id, None)
        for line in lines:
            groups.join(cause, group, line)
        self._open(name, incident, now, group)
        for line in lines:
            self._member_note(name, incident, line, "opened", now)

    def _open(self, name: str, incident: Incident, now: int, group: _Group | None) -> None:
        self._put_message(name, incident, now + self._group_wait_ns(name), group)
        if incident.last_change == "reopened":
            self._note(name, incident, incident.last_change, now)

    def _changed(self, name: str, groups: _Groups, incident: Incident, now: int) -> str | None:
        """An incident with a notification of its own: bring it up to date."""
        if self.silences.silencing(incident) is not None:
            return "silenced"
        cause = cause_key(incident)
        group = groups.by_cause.get(cause) if cause else None
        if group is not None and group.lead.id == incident.id:
            group.lead = incident
        elif cause and group is None and incident.status != "resolved":
            group = groups.lead(cause, incident)  # e.g. after a restart, or reopened
        else:
            group = None
        change = incident.last_change
        if change == "resolved":
            groups.dissolve(incident.id)
            if not self.settings.notifier_rules(name).send_resolved:
                return None
        self._put_message(name, incident, now, group)
        if change in NOTE_CHANGES:
            self._note(name, incident, change, now)
        return "updated"

    def _member_changed(self, name: str, groups: _Groups, incident: Incident, now: int) -> bool:
        """A change of an incident listed on another's notification; False if its group is gone."""
        cause = groups.member_of[incident.id]
        group = groups.by_cause.get(cause)
        if group is None or incident.id not in group.members:
            groups.member_of.pop(incident.id, None)
            return False
        line = group.members[incident.id] = related_line(self._redacted(incident))
        if incident.last_change in MEMBER_NOTE_CHANGES:
            self._member_note(name, group.lead, line, incident.last_change, now)
            self._put_message(name, group.lead, now, group)
        if incident.status == "resolved":
            groups.member_of.pop(incident.id, None)
        return True

    # ---- writing to the outbox ----
    def _put_message(self, name: str, lead: Incident, due_ns: int, group: _Group | None) -> None:
        newest = self._newest.get(lead.id)
        if newest is not None and newest.version > lead.version:
            lead = newest
        related = [line for line in (group.members.values() if group else ()) if line["id"] != lead.id]
        key = notification_key(lead)
        self._message_lead[name][key] = lead.id
        self._message_lead[name].move_to_end(key)
        _bound(self._message_lead[name])
        self.outbox.put_message(name, key, lead.version, due_ns,
                                {"incident": self._redacted(lead).snapshot(), "related": related})

    def _note(self, name: str, incident: Incident, change: str, now: int) -> None:
        self.outbox.put_note(name, notification_key(incident), f"{change}:{incident.version}", incident.version, now,
                             {"change": change, "incident": self._redacted(incident).snapshot(),
                              "user": incident.acknowledged_by})

    def _member_note(self, name: str, lead: Incident, line: dict[str, Any], change: str, now: int) -> None:
        """A member's change in its lead's timeline; `line` is the member's related_line."""
        self.outbox.put_note(name, notification_key(lead), f"related:{line['id']}:{line['version']}", lead.version,
                             now, {"change": "related", "member_change": change, "incident": line})

    def _redacted(self, incident: Incident) -> Incident:
        return redact_incident(self.redactor, incident)

    def _group_wait_ns(self, name: str) -> int:
        return int(self.settings.notifier_rules(name).group_wait * NS_PER_S)

    # ---- after a restart ----
    def resume(self, incidents: Iterable[Incident]) -> None:
        """Open incidents that have a notification lead their cause's group again."""
        with self._lock:
            for name, groups in self._groups.items():
                for incident in sorted(incidents, key=rank, reverse=True):
                    cause = cause_key(incident)
                    key = notification_key(incident)
                    if cause and cause not in groups.by_cause and self.outbox.has_notification(name, key):
                        groups.lead(cause, incident)
                        self._message_lead[name].setdefault(key, incident.id)

    # ---- repeat ----
    def start(self) -> None:
        if any(self.settings.notifier_rules(n).repeat_interval > 0 for n in self.notifiers):
            self._repeater = threading.Thread(target=self._repeat_loop, name="otel-ai-repeat", daemon=True)
            self._repeater.start()

    def _repeat_loop(self) -> None:
        intervals = [self.settings.notifier_rules(n).repeat_interval for n in self.notifiers]
        every = min(REMINDER_CHECK_S, min(i for i in intervals if i > 0) / 2)
        while not self._stop.wait(every):
            try:
                self.queue_reminders(self.clock_ns())
            except Exception:
                log.exception("queueing reminders failed")

    def queue_reminders(self, now_ns: int) -> int:
        """Open, unacknowledged incidents notified longer than repeatInterval ago get a
        reminder, unless a silence covers them now."""
        queued = 0
        for name in self.notifiers:
            interval_ns = int(self.settings.notifier_rules(name).repeat_interval * NS_PER_S)
            if interval_ns <= 0:
                continue
            for known in self.outbox.notified_before(name, now_ns - interval_ns):
                incident = self.store.get(known.incident_id) or self.store.problem_lead(known.incident_id)
                if incident is None or incident.status != "open" or self.silences.silencing(incident) is not None:
                    continue  # not touched: once a silence is lifted the reminder is due at once
                if self.outbox.put_note(name, known.incident_id, f"reminder:{now_ns // interval_ns}", incident.version,
                                        now_ns, {"change": "reminder", "incident": self._redacted(incident).snapshot()}):
                    queued += 1
                    self.metrics.notifications.labels(notifier=name, outcome="reminded").inc()
                self.outbox.touch(name, known.incident_id, now_ns)
            if queued:
                self.wake(name)
        return queued

    def shutdown(self) -> None:
        self._stop.set()
        if self._repeater is not None:
            self._repeater.join(timeout=2.0)
