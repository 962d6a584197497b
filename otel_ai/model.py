"""The records that flow between pipeline stages: subjects, anomalies and incidents.

Kept free of behaviour so that every stage (detectors, incidents, exporters, store)
can depend on this module without depending on each other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from otel_ai.timefmt import rfc3339

ROUTE = "route"
DEPENDENCY = "dependency"
INSTANCE = "instance"  # a pod, process or host, from its resource metrics (CPU, memory)
SYSTEM = "system"  # otel-ai's own alerts, e.g. COST_ALERT for the AI budget

SEVERITIES = ("info", "warning", "critical")

# The seed's full list of event types. Detectors (detectors/) emit the span-based ones;
# COST_ALERT comes from the AI budget and RECOVERY_SIGNAL is the "recovering" change of
# an open incident, not an incident of its own.
EVENT_TYPES = (
    "ERROR_RATE_SPIKE",
    "LATENCY_ANOMALY",
    "CIRCUIT_BREAKER_CANDIDATE",
    "UPSTREAM_DEGRADATION",
    "RATE_LIMIT_BREACH",
    "COST_ALERT",
    "RETRY_STORM",
    "SECURITY_ANOMALY",
    "CAPACITY_WARNING",
    "RECOVERY_SIGNAL",
)


@dataclass(frozen=True, slots=True)
class Subject:
    """What a window tracks: a route (SERVER spans), a dependency (CLIENT spans), or an
    instance (a pod, process or host of a service, from resource metrics)."""

    kind: str  # ROUTE, DEPENDENCY, INSTANCE or SYSTEM
    service: str  # service.name for routes and instances; the dependency's name for dependencies
    method: str  # HTTP method / rpc method; "" for dependencies and instances
    route: str  # http.route / rpc service / span name; the dependency key; the pod or host name

    def label(self) -> str:
        if self.kind == DEPENDENCY:
            return f"dependency {self.service}"
        if self.kind == INSTANCE:
            return f"{self.service} instance {self.route}"
        if self.kind == SYSTEM:
            return f"{self.service} {self.route}".strip()
        return f"{self.method} {self.route}".strip()


@dataclass(slots=True)
class Anomaly:
    """One detector's finding for one subject at one event time (a window close). The
    detector fills in everything its type knows: the metric, the summary text, and how
    the suspects stage tells its bad requests from good ones."""

    type: str
    severity: str
    subject_id: int
    subject: Subject
    metric: str  # error_rate, latency_p95, http_429_rate, retry_amplification, ...
    unit: str  # % | ms | x
    value: float
    threshold: float
    baseline: float | None
    window: str  # the window that fired, e.g. "1m"
    breach_ratio: float
    trend: str  # rising | stable | falling
    confidence: float
    confidence_factors: dict[str, float]
    recent_samples: list[tuple[int, float]]  # (event time ns, value) per slot
    sample_count: int
    bad_count: int
    event_time_ns: int
    # What the suspects stage counts as a bad request: "error", "slow" (slower than
    # slow_threshold_ms), or the name of a counter whose requests are captured as bad
    # (e.g. "throttled", "auth_failures", "retries").
    bad_rule: str
    slow_threshold_ms: float = 0.0
    p_value: float = 1.0
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # type-specific numbers, added to incident.data
    suspect_keys: tuple[str, ...] = ()  # keys this type asks about first when suspects tie
    tally_keys: tuple[str, ...] = ()  # keys whose values among bad requests are counted (distinct, top)
    root_cause: dict[str, Any] | None = None  # set by localisation (graph/root_cause.py) before the incident stage


@dataclass(slots=True)
class Incident:
    id: str
    type: str
    severity: str
    status: str  # open | acknowledged | resolved
    subject: Subject
    summary: str
    confidence: float
    opened_at_ns: int
    updated_at_ns: int
    resolved_at_ns: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at_ns: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    suspects: list[dict[str, Any]] = field(default_factory=list)
    analysis: dict[str, Any] | None = None
    version: int = 1
    below_min_confidence: bool = False
    # Event time of the last evaluation that breached / that was healthy.
    last_breach_ns: int = 0
    healthy_since_ns: int | None = None
    reopen_count: int = 0
    last_change: str = "opened"
    # Where the service graph's localisation found the cause (graph/localize.py), and the
    # problem of every incident with that root (otel_ai/problems.py).
    root_cause: dict[str, Any] | None = None
    problem_id: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The JSONL/API schema of DESIGN.md, plus a few extra fields."""
        return {
            "id": self.id,
            "type": self.type,
            "severity": self.severity,
            "status": self.status,
            "service": self.subject.service,
            "method": self.subject.method,
            "route": self.subject.route,
            "subject_kind": self.subject.kind,
            "summary": self.summary,
            "confidence": round(self.confidence, 3),
            "opened_at": rfc3339(self.opened_at_ns),
            "updated_at": rfc3339(self.updated_at_ns),
            "resolved_at": rfc3339(self.resolved_at_ns),
            "acknowledged_by": self.acknowledged_by,
            "data": self.data,
            "context": self.context,
            "suspects": self.suspects,
            "analysis": self.analysis,
            "version": self.version,
            "change": self.last_change,
            "reopen_count": self.reopen_count,
            "below_min_confidence": self.below_min_confidence,
            "root_cause": self.root_cause,
            "problem_id": self.problem_id,
        }

    def copy(self) -> "Incident":
        return dataclasses.replace(
            self,
            data=dict(self.data),
            context=dict(self.context),
            suspects=list(self.suspects),
        )
