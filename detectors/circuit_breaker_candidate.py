"""CIRCUIT_BREAKER_CANDIDATE: most calls to one dependency fail (>= 50 % by default,
never lowered by the baseline): callers should stop calling it for a while."""
from __future__ import annotations

from otel_ai.detectors.base import DEPENDENCY_KIND, RateDetector, share_summary
from otel_ai.model import Anomaly


class CircuitBreakerCandidate(RateDetector):
    event_type = "CIRCUIT_BREAKER_CANDIDATE"
    subject_kind = DEPENDENCY_KIND
    bad_noun = "failing calls"
    adaptive = False

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        return share_summary("Circuit breaker candidate", anomaly, "failing")
