"""Incident lifecycle: dedup, open -> (acknowledged) -> resolved, recovery
verification, flap reopening, and publishing each change downstream.

One incident per (subject, type) episode. While it is open, new detections update it.
It resolves only after the subject has looked healthy for `recoveryPeriod` of event
time (or had no traffic at all for `staleAfter`); a look that is healthy a minute after
the last breach emits a "recovering" change (the seed's RECOVERY_SIGNAL), a breach during
verification an "updated" one. A breach within `cooldown` of resolving reopens the same
incident instead of paging anew.

Every change gets the next version and is published (a copy) while the lock is held;
publishing only appends to the downstream queues (otel_ai/stages.py), so consumers see
versions in order and nothing downstream runs under this lock. Later stages never
change an incident themselves: they post events (otel_ai/events.py) that `apply` turns
into changes.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from typing import Callable

from otel_ai.config import Settings
from otel_ai.events import AnalysisDone, BudgetExhausted, IncidentEvent
from otel_ai.graph.root_cause import with_root_first
from otel_ai.model import DEPENDENCY, SYSTEM, Anomaly, Incident, Subject
from otel_ai.problems import ProblemBook
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore
from otel_ai.suspects import Attribution
from otel_ai.timefmt import NS_PER_S, rfc3339

log = logging.getLogger(__name__)

RECOVERY = "recovery"  # context key while recovery is being verified
# Health is judged over the last minute: only after a minute without a breach is a healthy
# verdict about the time after it, and worth announcing as recovering.
RECOVERING_QUIET_NS = 60 * NS_PER_S
MATERIAL_CHANGE = 0.2  # relative change of the metric that is worth a new snapshot
BUDGET_SUBJECT = Subject(SYSTEM, "otel-ai", "", "ai-budget")


def _locked(method):
    """The pipeline worker, analysis workers and admin threads all change incidents."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def incident_id(event_type: str, subject: Subject, opened_at_ns: int) -> str:
    """Deterministic, so a replay yields the same ids."""
    raw = f"{event_type}|{subject.kind}|{subject.service}|{subject.method}|{subject.route}|{opened_at_ns}"
    return "inc_" + hashlib.sha256(raw.encode()).hexdigest()[:16]


_METRIC_NAMES = {"error_rate": "Error rate", "latency_p95": "p95 latency", "http_429_rate": "429 share",
                 "auth_failure_rate": "401/403 share", "calls_per_request": "Calls per request",
                 "utilization_estimate": "Estimated utilization"}


def _amount(value, unit: str) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    return f"{value:.0f} ms" if unit == "ms" else f"{value:.1f}%" if unit == "%" else f"{value:g} {unit}".strip()


def plain_summary(anomaly: Anomaly) -> str:
    """'Error rate 30.0% on POST /api/pay (threshold 10.0%)': for an anomaly its detector did not word."""
    s = anomaly.subject
    where = f"calls to {s.service}" if s.kind == DEPENDENCY else s.label()
    name = _METRIC_NAMES.get(anomaly.metric, anomaly.metric)
    return (f"{name} {_amount(anomaly.value, anomaly.unit)} on {where} "
            f"(threshold {_amount(anomaly.threshold, anomaly.unit)})")


def resolved_summary(incident: Incident) -> str:
    """'Error rate peaked at 42.0% on POST /api/pay (threshold 10%); 0.8% at recovery': a resolved
    incident is described by its worst and its last value, not by its last breach."""
    data = incident.data
    unit = str(data.get("unit") or "")
    name = _METRIC_NAMES.get(str(data.get("metric")), str(data.get("metric") or "value"))
    s = incident.subject
    where = f"calls to {s.service}" if s.kind == DEPENDENCY else s.label()
    text = f"{name} peaked at {_amount(data.get('peak_value'), unit)} on {where} (threshold {_amount(data.get('threshold'), unit)})"
    recovery = data.get("recovery_value")
    return text + (f"; {_amount(recovery, unit)} at recovery" if recovery is not None else "; no traffic at recovery")


class IncidentManager:
    def __init__(self, settings: Settings, store: IncidentStore, publish: Callable[[Incident], None],
                 metrics: SelfMetrics):
        self.settings = settings
        self.store = store  # read at start (restore) and for incidents no longer in memory; sinks write it
        self.publish = publish
        self.metrics = metrics
        self.active: dict[tuple[Subject, str], Incident] = {}
        self.resolved: dict[tuple[Subject, str], Incident] = {}
        self.rules = settings.incidents
        self._lock = threading.RLock()
        self.event_time_ns = 0  # latest event time seen; the clock of changes made off the pipeline
        self._latest_values: dict[tuple[Subject, str], float | None] = {}  # the metric now, per watched incident
        self.problems = ProblemBook(int(self.rules.cooldown * NS_PER_S))

    @_locked
    def restore(self, now_ns: int) -> int:
        """Reload open incidents (and recently resolved ones, for flap reopening)."""
        cooldown_ns = int(self.rules.cooldown * NS_PER_S)
        restored = self.store.load_unresolved_or_recent(now_ns - cooldown_ns) if now_ns else []
        for incident in restored:
            key = (incident.subject, incident.type)
            (self.resolved if incident.status == "resolved" else self.active)[key] = incident
            if incident.problem_id is not None:
                self.problems.join(incident, incident.opened_at_ns)
                if incident.status == "resolved":
                    self.problems.leave(incident, incident.resolved_at_ns or now_ns)
        self.metrics.open_incidents.set(len(self.active))
        return len(restored)

    @_locked
    def watched(self) -> list[Incident]:
        return list(self.active.values())

    @_locked
    def on_anomaly(self, anomaly: Anomaly, attribute: Callable[[Anomaly], Attribution]) -> Incident | None:
        key = (anomaly.subject, anomaly.type)
        now = anomaly.event_time_ns
        self.event_time_ns = max(self.event_time_ns, now)
        incident = self.active.get(key)
        if incident is not None:
            relapsed = RECOVERY in incident.context  # it was shown as recovering: correct that now
            incident.last_breach_ns = now
            incident.healthy_since_ns = None
            if relapsed or self._worth_update(incident, anomaly):
                self._fill(incident, anomaly, attribute(anomaly))
                self._emit(incident, "updated", now)
            return incident
        incident = self.resolved.pop(key, None)
        if incident is not None and now - (incident.resolved_at_ns or 0) <= self.rules.cooldown * NS_PER_S:
            incident.status = "open"
            incident.resolved_at_ns = None
            incident.reopen_count += 1
            incident.last_breach_ns = now
            incident.healthy_since_ns = None
            self._fill(incident, anomaly, attribute(anomaly))
            if incident.problem_id is not None:  # its notification keeps its key: no new problem on a reopen
                self.problems.join(incident, now)
            self.active[key] = incident
            self._emit(incident, "reopened", now)
            return incident
        incident = Incident(
            id=incident_id(anomaly.type, anomaly.subject, now), type=anomaly.type, severity=anomaly.severity,
            status="open", subject=anomaly.subject, summary="", confidence=0.0,
            opened_at_ns=now, updated_at_ns=now, last_breach_ns=now, version=0,
        )
        self._fill(incident, anomaly, attribute(anomaly))
        incident.problem_id = self.problems.join(incident, now)
        incident.analysis = self.problems.analysis(incident.problem_id)  # a problem is analysed once
        self.active[key] = incident
        self.metrics.incidents.labels(type=anomaly.type, severity=anomaly.severity).inc()
        self.metrics.incident_confidence.observe(anomaly.confidence)
        first_breach = min((t for t, _ in anomaly.recent_samples if _ >= anomaly.threshold), default=now)
        self.metrics.detection_delay.observe(max(0.0, (now - first_breach) / NS_PER_S))
        self._emit(incident, "opened", now)
        return incident

    def _worth_update(self, incident: Incident, anomaly: Anomaly) -> bool:
        if anomaly.event_time_ns - incident.updated_at_ns < self.rules.update_interval * NS_PER_S:
            return False
        before = incident.data.get("current_value") or 0.0
        return abs(anomaly.value - before) > MATERIAL_CHANGE * max(abs(before), 1e-9) or anomaly.severity != incident.severity

    def _fill(self, incident: Incident, anomaly: Anomaly, found: Attribution) -> None:
        incident.severity = anomaly.severity
        incident.summary = anomaly.summary or plain_summary(anomaly)  # worded by the detector that knows its type
        incident.confidence = anomaly.confidence
        incident.below_min_confidence = anomaly.confidence < self.settings.min_confidence
        peak = incident.data.get("peak_value")
        incident.data = {
            "metric": anomaly.metric, "current_value": anomaly.value, "threshold": anomaly.threshold,
            "peak_value": anomaly.value if not isinstance(peak, (int, float)) else max(peak, anomaly.value),
            "baseline_value": anomaly.baseline, "window": anomaly.window, "trend": anomaly.trend,
            "unit": anomaly.unit, "breach_ratio": anomaly.breach_ratio, "p_value": anomaly.p_value,
            "confidence_factors": anomaly.confidence_factors, **anomaly.details,
        }
        incident.context = {
            "recent_samples": [{"timestamp": rfc3339(t), "value": v} for t, v in anomaly.recent_samples],
            "sample_count": anomaly.sample_count, "bad_count": anomaly.bad_count,
            "exemplar_trace_ids": found.exemplar_trace_ids, "exemplar_span_ids": found.exemplar_span_ids,
            "top_errors": found.top_errors,
            "new_versions": found.new_versions,
            "suspect_sample": {"bad": found.bad_requests, "good": found.good_requests},
        }
        if found.bad_values:
            incident.context["bad_request_values"] = found.bad_values
        if anomaly.root_cause is not None:  # a later slot that cannot place it keeps the last root
            incident.root_cause = anomaly.root_cause
        if found.suspects or not incident.suspects:
            incident.suspects = found.suspects
        incident.suspects = with_root_first(
            [s for s in incident.suspects if s.get("source") != "root_cause"], incident.root_cause, anomaly.bad_rule,
            incident.subject)

    @_locked
    def observe_values(self, values: dict[tuple[Subject, str], float | None]) -> None:
        """The watched incidents' metric as of the latest closed slot: the value at recovery."""
        self._latest_values = dict(values)

    @_locked
    def on_health(self, event_time_ns: int, verdicts: dict[tuple[Subject, str], bool | None]) -> None:
        recovery_ns = self.rules.recovery_period * NS_PER_S
        stale_ns = self.rules.stale_after * NS_PER_S
        self.event_time_ns = max(self.event_time_ns, event_time_ns)
        for key, incident in list(self.active.items()):
            if incident.subject.kind == SYSTEM:
                if event_time_ns >= incident.context.get("resets_at_ns", event_time_ns + 1):
                    self._resolve(key, incident, event_time_ns, "budget reset")
                continue
            verdict = verdicts.get(key)
            if verdict is False:
                incident.healthy_since_ns = None
                continue
            if verdict is True:
                if incident.healthy_since_ns is None:
                    incident.healthy_since_ns = event_time_ns
                if event_time_ns - incident.healthy_since_ns >= recovery_ns and event_time_ns - incident.last_breach_ns >= recovery_ns:
                    self._resolve(key, incident, event_time_ns, "recovered")
                elif RECOVERY not in incident.context and event_time_ns - incident.last_breach_ns >= RECOVERING_QUIET_NS:
                    # RECOVERY_SIGNAL: back below threshold, verification starts; shown, never paged.
                    incident.context = {**incident.context, RECOVERY: {
                        "verifying_since": rfc3339(incident.healthy_since_ns), "verify_for_s": self.rules.recovery_period}}
                    self._emit(incident, "recovering", event_time_ns)
            elif event_time_ns - incident.last_breach_ns >= stale_ns:
                self._resolve(key, incident, event_time_ns, "no traffic")

    def _resolve(self, key, incident: Incident, now: int, reason: str) -> None:
        incident.status = "resolved"
        incident.resolved_at_ns = now
        self.metrics.time_to_resolve.labels(type=incident.type).observe(max(0.0, (now - incident.opened_at_ns) / NS_PER_S))
        incident.context = {**incident.context, "resolution": reason}
        if incident.subject.kind != SYSTEM:
            recovery = self._latest_values.get(key) if reason == "recovered" else None
            incident.data = {**incident.data, "recovery_value": recovery,
                             "peak_value": incident.data.get("peak_value", incident.data.get("current_value"))}
            if recovery is not None:
                incident.data["current_value"] = recovery
            incident.summary = resolved_summary(incident)
        del self.active[key]
        self.problems.leave(incident, now)
        if len(self.resolved) > 10_000:
            self.resolved.pop(next(iter(self.resolved)))
        self.resolved[key] = incident
        self._emit(incident, "resolved", now)

    @_locked
    def acknowledge(self, incident_id_: str, who: str, now_ns: int) -> Incident | None:
        """Open -> acknowledged, once; None if the incident is not open or acknowledged.
        The open members of its problem are acknowledged with it: the problem is one page
        (whichever member each notifier shows), and whoever took it owns all of it."""
        found = next((i for i in self.active.values() if i.id == incident_id_), None)
        if found is None or found.status == "acknowledged":
            return found  # a second click changes nothing
        members = [] if found.problem_id is None else [
            i for i in self.active.values() if i.problem_id == found.problem_id and i.status == "open" and i is not found]
        for incident in (found, *members):
            incident.status = "acknowledged"
            incident.acknowledged_by = who
            incident.acknowledged_at_ns = now_ns
            self.metrics.time_to_acknowledge.labels(type=incident.type).observe(
                max(0.0, (now_ns - incident.opened_at_ns) / NS_PER_S))
            self._emit(incident, "acknowledged", max(now_ns, incident.updated_at_ns))
        return found

    @_locked
    def apply(self, event: IncidentEvent) -> Incident | None:
        """A later stage's event, as one more change."""
        if isinstance(event, AnalysisDone):
            return self.attach_analysis(event.incident_id, event.analysis)
        if isinstance(event, BudgetExhausted):
            return self.raise_cost_alert(event.spent_usd, event.limit_usd, event.resets_at_ns, event.detail)
        raise TypeError(f"unknown incident event {event!r}")

    @_locked
    def attach_analysis(self, incident_id_: str, analysis: dict) -> Incident | None:
        """An analysis is done: one more snapshot, change "analyzed"; of every member in
        memory when the incident is in a problem (the problem is analysed once)."""
        incident = next((i for i in (*self.active.values(), *self.resolved.values()) if i.id == incident_id_), None)
        if incident is None:
            incident = self.store.get(incident_id_)
            if incident is None:
                log.warning("analysis for unknown incident %s dropped", incident_id_)
                return None
        members = [incident]
        if incident.problem_id is not None:
            self.problems.analyzed(incident.problem_id, analysis)
            members += [i for i in (*self.active.values(), *self.resolved.values())
                        if i.problem_id == incident.problem_id and i.id != incident.id]
        for member in members:
            member.analysis = analysis
            self._emit(member, "analyzed", max(self.event_time_ns, member.updated_at_ns))
        return incident

    @_locked
    def raise_cost_alert(self, spent_usd: float, limit_usd: float, resets_at_ns: int, detail: str = "") -> Incident | None:
        """The first time in a UTC day that the analysis budget cannot cover an analysis.
        Its id is derived from the day, so a restart on the same day does not raise it again."""
        now = self.event_time_ns or time.time_ns()
        day_start = resets_at_ns - 86_400 * NS_PER_S
        key = (BUDGET_SUBJECT, "COST_ALERT")
        alert_id = incident_id("COST_ALERT", BUDGET_SUBJECT, day_start)
        if alert_id in {i.id for i in self.active.values()} or self.store.get(alert_id) is not None:
            return None
        incident = Incident(
            id=alert_id, type="COST_ALERT", severity="warning", status="open", subject=BUDGET_SUBJECT,
            summary=(f"AI analysis budget spent: ${spent_usd:.4f} of ${limit_usd:.2f} today; incidents get the "
                     f"offline analysis until {rfc3339(resets_at_ns)}"),
            confidence=1.0, opened_at_ns=now, updated_at_ns=now, last_breach_ns=now, version=0,
            data={"metric": "ai_cost_usd", "current_value": round(spent_usd, 6), "threshold": limit_usd,
                  "baseline_value": None, "window": "1d", "trend": "rising", "unit": "USD",
                  "breach_ratio": round(spent_usd / limit_usd, 3) if limit_usd else None},
            context={"resets_at": rfc3339(resets_at_ns), "resets_at_ns": resets_at_ns, "detail": detail},
        )
        self.active[key] = incident
        self.metrics.incidents.labels(type="COST_ALERT", severity="warning").inc()
        self._emit(incident, "opened", now)
        return incident

    def _emit(self, incident: Incident, change: str, now: int) -> None:
        incident.version += 1
        incident.updated_at_ns = max(now, incident.updated_at_ns)
        incident.last_change = change
        self.metrics.incident_changes.labels(change=change).inc()
        self.metrics.open_incidents.set(len(self.active))
        self.publish(incident.copy())
