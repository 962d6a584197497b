"""CAPACITY_WARNING from resource metrics: a pod's, container's or host's CPU or memory
climbing toward its limit (otel_ai.metrics.saturation), with the time to saturation at
the current trend and the routes the instance serves. Part of CapacityWarning, beside
the span-based signal; it fires once the utilization is at least the rule's threshold
and a significant rise (slope t statistic >= 4) reaches the limit within the hour, or
the trend is already at it. A steady or merely noisy load stays quiet, whatever its level.
"""
from __future__ import annotations

import numpy as np

from otel_ai.config import EventRule
from otel_ai.detectors.base import HEALTHY_FRACTION, confidence, where
from otel_ai.metrics.saturation import Forecast
from otel_ai.model import INSTANCE, Anomaly
from otel_ai.subjects import KIND_CODES
from otel_ai.timefmt import format_duration
from otel_ai.windows import WindowView

INSTANCE_KIND = KIND_CODES[INSTANCE]
BAD_RULE = "saturation"  # no request is bad: suspects stay empty, the routes are in the details


class ResourceSaturation:
    def __init__(self, rule: EventRule):
        self.rule = rule
        self.threshold = rule.threshold / 100.0

    def describe(self) -> str:
        return (f"CPU or memory of a pod or host >= {self.rule.threshold:g}% of its limit and rising to it "
                "within the hour (resource metrics)")

    def detect(self, view: WindowView) -> list[Anomaly]:
        if view.saturation is None:
            return []
        found: dict[int, Anomaly] = {}
        for forecast in view.saturation.forecasts(min_ratio=self.threshold):
            sid = forecast.subject_id
            if forecast.seconds_to_saturation is None or not 0 <= sid < view.size or sid in found:
                continue  # the most urgent series of an instance reports (forecasts come soonest first)
            if view.kinds[sid] == INSTANCE_KIND:
                found[sid] = self._anomaly(view, forecast)
        return list(found.values())

    def _anomaly(self, view: WindowView, forecast: Forecast) -> Anomaly:
        subject = view.subjects[forecast.subject_id]
        value = 100.0 * forecast.ratio
        breach = forecast.ratio / max(self.threshold, 1e-9)
        neg_log_p = min(forecast.slope_t, 30.0) ** 2 / 2  # the normal tail of the slope's t statistic
        conf, factors = confidence(neg_log_p, len(forecast.samples), breach, "rising")
        routes = view.saturation.routes_of(subject.service, subject.route)
        series = forecast.series
        window_s = (forecast.samples[-1][0] - forecast.samples[0][0]) / 1e9
        anomaly = Anomaly(
            type="CAPACITY_WARNING", severity=self.rule.severity, subject_id=forecast.subject_id, subject=subject,
            metric=f"{series.resource}_utilization", unit="%", value=round(value, 1), threshold=self.rule.threshold,
            baseline=None, window=format_duration(window_s), breach_ratio=round(breach, 2), trend="rising",
            confidence=conf, confidence_factors=factors,
            recent_samples=[(t, round(100.0 * r, 1)) for t, r in forecast.samples],
            sample_count=len(forecast.samples), bad_count=sum(r >= self.threshold for _, r in forecast.samples),
            event_time_ns=view.end_ns, bad_rule=BAD_RULE, p_value=float(np.exp(-neg_log_p)),
            details={
                "resource": series.resource, "source": series.source, "instance": subject.route,
                "container": series.container or None,
                "time_to_saturation_s": round(forecast.seconds_to_saturation, 0),
                "routes": [view.subjects[r].label() for r in routes if r < view.size],
            },
        )
        anomaly.summary = self.summary(anomaly)
        return anomaly

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        """Healthy when no series of the instance is rising to its limit any more and all
        are below HEALTHY_FRACTION of the threshold or flat; None without samples."""
        out: dict[int, bool | None] = {}
        for sid in subject_ids.tolist():
            forecasts = [] if view.saturation is None else view.saturation.of_subject(sid)
            if not forecasts:
                out[sid] = None
            else:
                out[sid] = all(f.seconds_to_saturation is None or f.ratio < HEALTHY_FRACTION * self.threshold
                               for f in forecasts)
        return out

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        forecasts = [] if view.saturation is None else view.saturation.of_subject(sid)
        found = [f.ratio for f in forecasts if f"{f.series.resource}_utilization" == metric]
        return round(100.0 * max(found), 1) if found else None

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        d = anomaly.details
        what = "CPU" if d["resource"] == "cpu" else "memory"
        eta = d["time_to_saturation_s"]
        when = "at its limit now" if eta == 0 else (
            f"saturation in about {eta:.0f} s" if eta < 90 else f"saturation in about {eta / 60:.0f} min")
        routes = d["routes"]
        serving = f"; serves {', '.join(routes[:3])}" if routes else ""
        return (f"Capacity warning on {where(anomaly.subject)}: {what} at {anomaly.value:.0f}% of its limit "
                f"and rising, {when} at this trend{serving}")
