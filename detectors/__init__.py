"""Detectors, one module per event type. To add one: copy a neighbour, give it an
event_type, and list it in BUILT_IN below; or keep it in your own package and load it
with `detectors: ["my_pkg.mod:MyDetector"]` in the config (docs/development.md)."""
from __future__ import annotations

import importlib
import re
from typing import Sequence

from otel_ai.detectors.base import Detector
from otel_ai.detectors.capacity_warning import CapacityWarning
from otel_ai.detectors.circuit_breaker_candidate import CircuitBreakerCandidate
from otel_ai.detectors.error_rate_spike import ErrorRateSpike
from otel_ai.detectors.latency_anomaly import LatencyAnomaly
from otel_ai.detectors.rate_limit_breach import RateLimitBreach
from otel_ai.detectors.retry_storm import RetryStorm
from otel_ai.detectors.security_anomaly import SecurityAnomaly
from otel_ai.detectors.upstream_degradation import UpstreamDegradation

# In a fixed order: detectors run in it, so incident ids are deterministic.
BUILT_IN: dict[str, type] = {cls.event_type: cls for cls in (
    ErrorRateSpike, LatencyAnomaly, CircuitBreakerCandidate, UpstreamDegradation,
    RateLimitBreach, RetryStorm, SecurityAnomaly, CapacityWarning,
)}
# Event types that exist but are not configured under `events`, and why.
NOT_DETECTORS = {
    "COST_ALERT": "raised by the AI budget (budget.alertOnBudgetExceeded)",
    "RECOVERY_SIGNAL": "the 'recovering' change of an open incident (incidents.recoveryPeriod)",
}
_INTERFACE = ("event_type", "counters", "captures", "detect", "healthy", "current", "describe", "summary")
_EVENT_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def load_plugin(spec: str) -> type:
    """The detector class named by 'package.module:ClassName'; ValueError saying what is wrong."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"{spec!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's to see, with its cause
        raise ValueError(f"{spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{spec!r}: {module_name} has no class {name}")
    missing = [attr for attr in _INTERFACE if not hasattr(cls, attr)]
    if missing:
        raise ValueError(f"{spec!r} is not a detector: it lacks {', '.join(missing)} (subclass "
                         "otel_ai.detectors.base.RateDetector, or see docs/development.md)")
    if not isinstance(cls.event_type, str) or not _EVENT_TYPE.match(cls.event_type):
        raise ValueError(f"{spec!r}: event_type must be UPPER_SNAKE_CASE, got {cls.event_type!r}")
    return cls


def detector_classes(plugins: Sequence[str] = ()) -> dict[str, type]:
    """Event type -> detector class: the built-in ones, then plugins (which may replace one)."""
    classes = dict(BUILT_IN)
    for spec in plugins:
        cls = load_plugin(spec)
        classes[cls.event_type] = cls
    return classes


def build_detectors(settings) -> list[Detector]:
    """The enabled detectors, built-in ones first, in a fixed order."""
    return [cls(settings.events[event_type]) for event_type, cls in detector_classes(settings.detectors).items()
            if event_type in settings.events and settings.events[event_type].enabled]
