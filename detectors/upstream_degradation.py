"""UPSTREAM_DEGRADATION: calls to one dependency (CLIENT spans keyed by peer.service,
server.address or db.system/db.namespace) start failing or slowing down. Errors are
judged like ERROR_RATE_SPIKE, latency like LATENCY_ANOMALY (with latencyThreshold);
when both fire, the error finding is reported."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from otel_ai.config import EventRule
from otel_ai.counters import Counter
from otel_ai.detectors.base import DEPENDENCY_KIND, LatencyDetector, RateDetector, rule_text
from otel_ai.model import Anomaly
from otel_ai.windows import WindowView


class UpstreamDegradationRule(EventRule):
    latency_threshold: float = Field(1000.0, alias="latencyThreshold", gt=0)  # ms, the calls' p95


class _DependencyErrors(RateDetector):
    event_type = "UPSTREAM_DEGRADATION"
    subject_kind = DEPENDENCY_KIND
    bad_noun = "failing calls"


class _DependencyLatency(LatencyDetector):
    event_type = "UPSTREAM_DEGRADATION"
    subject_kind = DEPENDENCY_KIND


class UpstreamDegradation:
    event_type = "UPSTREAM_DEGRADATION"
    Rule = UpstreamDegradationRule

    def __init__(self, rule: UpstreamDegradationRule):
        self.rule = rule
        self.errors = _DependencyErrors(rule)
        self.latency = _DependencyLatency(rule, rule.latency_threshold)

    @property
    def counters(self) -> tuple[Counter, ...]:
        return self.errors.counters + self.latency.counters

    @property
    def captures(self) -> tuple[Counter, ...]:
        return ()

    def describe(self) -> str:
        return (f"share of failing calls on dependencies >= {self.rule.threshold:g}% or their p95 >= "
                f"{self.rule.latency_threshold:g} ms (both adaptive below on a warm baseline); "
                f"{rule_text(self.rule)}")

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        if anomaly.metric == LatencyDetector.metric:
            return LatencyDetector.summary(anomaly)
        return RateDetector.summary(anomaly)

    def detect(self, view: WindowView) -> list[Anomaly]:
        found = {a.subject_id: a for a in self.latency.detect(view)}
        found.update({a.subject_id: a for a in self.errors.detect(view)})
        return list(found.values())

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        return (self.latency if metric == self.latency.metric else self.errors).current(view, sid, metric)

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        errors = self.errors.healthy(view, subject_ids)
        latency = self.latency.healthy(view, subject_ids)
        out: dict[int, bool | None] = {}
        for sid in errors:
            verdicts = [v for v in (errors[sid], latency.get(sid)) if v is not None]
            out[sid] = None if not verdicts else all(verdicts)
        return out
