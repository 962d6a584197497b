"""Detectors, one module per event type. To add one: copy a neighbour, give it an
event_type, and register it below."""
from __future__ import annotations

from otel_ai.config import Settings
from otel_ai.detectors.base import Detector
from otel_ai.detectors.circuit_breaker_candidate import CircuitBreakerCandidate
from otel_ai.detectors.error_rate_spike import ErrorRateSpike
from otel_ai.detectors.latency_anomaly import LatencyAnomaly
from otel_ai.detectors.upstream_degradation import UpstreamDegradation

REGISTRY = {
    "ERROR_RATE_SPIKE": ErrorRateSpike,
    "LATENCY_ANOMALY": LatencyAnomaly,
    "CIRCUIT_BREAKER_CANDIDATE": CircuitBreakerCandidate,
    "UPSTREAM_DEGRADATION": UpstreamDegradation,
}


def build_detectors(settings: Settings) -> list[Detector]:
    """The enabled detectors, in a fixed order (deterministic incident ids)."""
    built = []
    for event_type, factory in REGISTRY.items():
        rule = settings.events.get(event_type)
        if rule is not None and rule.enabled:
            built.append(factory(rule))
    return built
