"""RETRY_STORM: retries multiply the calls to a dependency. A call is a retry when its
CLIENT span has `http.request.resend_count` > 0, or when the same parent span already
called the same dependency in the batch. The metric is calls per request (calls per
first attempt), against the dependency's usual number: it fires at `threshold` times
the usual (2x by default) with a significant share of retries, and is critical from
`criticalAt` times (3x). Suspects name the caller that retries (service.name first)."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from otel_ai.config import EventRule
from otel_ai.counters import Counter, Retries
from otel_ai.detectors.base import DEPENDENCY_KIND, Hit, RateDetector, rule_text, where
from otel_ai.model import Anomaly
from otel_ai.windows import WindowView


class RetryStormRule(EventRule):
    critical_at: float = Field(3.0, alias="criticalAt", gt=1)  # amplification that makes it critical


class RetryStorm(RateDetector):
    event_type = "RETRY_STORM"
    Rule = RetryStormRule
    subject_kind = DEPENDENCY_KIND
    bad_noun = "retried calls"
    metric = "calls_per_request"
    unit = "x"
    suspect_keys = ("service.name",)
    tally_keys = ("service.name",)

    def __init__(self, rule: RetryStormRule):
        super().__init__(rule)
        # Remembers recent calls: one per pipeline. Retried calls label the captured ones.
        self.bad = Counter("retries", select=Retries(), capture_alone=False, spans_only=True)

    def describe(self) -> str:
        return (f"calls per request to a dependency >= {self.rule.threshold:g}x its usual number, critical from "
                f"{self.rule.critical_at:g}x; {rule_text(self.rule)}")

    def measure(self, share):
        return 1.0 / (1.0 - np.clip(share, 0.0, 0.999))

    def thresholds(self, view: WindowView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = view.baselines.rate(self.bad.name, view.size)
        warm = view.baselines.warm(view.size)
        usual = np.where(warm, base, 0.0)
        # Calls per request = 1 / (1 - retry share): `threshold` times the usual number.
        thr = 1.0 - (1.0 - usual) / self.rule.threshold
        p0 = np.where(warm, np.maximum(base, 0.001), np.maximum(base, 0.01))
        return thr, p0, warm

    @staticmethod
    def _amplification(hit: Hit) -> float:
        return hit.value / (hit.baseline or 1.0)

    def severity(self, hit: Hit) -> str:
        return "critical" if self._amplification(hit) >= self.rule.critical_at else self.rule.severity

    def details(self, hit: Hit) -> dict:
        return {"amplification": round(self._amplification(hit), 2),
                "retried_calls": hit.bad, "calls": hit.requests}

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        usual = f"usual {anomaly.baseline:.2f}, " if anomaly.baseline is not None else ""
        return (f"Retry storm on {where(anomaly.subject)}: {anomaly.value:.1f} calls per request, "
                f"{anomaly.details['amplification']:.1f}x amplification ({usual}threshold {anomaly.threshold:.2f})")
