"""CAPACITY_WARNING: a route nears saturation, seen in its requests (spans or metrics);
or a pod or host nears its CPU or memory limit, seen in its resource metrics
(resource_saturation.py, composed here).

Under rising load (a request rate at least MIN_LOAD_RISE times the usual) the route's
mean latency rises while its errors do not: requests queue. By Little's law the mean
concurrency is rate x latency (busy time / elapsed time). Read as a single queue, the
latency inflation gives the utilization: rho = 1 - W0 / W (W0 the usual mean latency,
W the current one), so rho = 50 % means requests take twice as long at a higher load.
The warning fires once rho reaches the threshold while the concurrency is at least
PEAK_FRACTION of the highest level the route has sustained, and the requests slower
than the usual p95 are significantly more than 5 %. It reports the time to saturation
at the current trend: the capacity is rate / rho, and the rate's least-squares slope
says when it is reached. A surge the route absorbs (latency flat) stays quiet, and so
does a slow dependency (latency up without more load).
"""
from __future__ import annotations

import numpy as np

from otel_ai.config import EventRule
from otel_ai.baseline import SLOW
from otel_ai.counters import BUSY_MS, ERRORS, REQUESTS
from otel_ai.detectors.base import (
    CONFIRM_SLOTS, HEALTHY_FRACTION, MEDIUM_SLOTS, MIN_BAD, ROUTE_KIND, TREND_SLOTS, confidence, evidence_scale,
    rate_surprise, rule_text, trend_of, where, window_plan,
)
from otel_ai.detectors.resource_saturation import INSTANCE_KIND, ResourceSaturation
from otel_ai.histogram import share_above
from otel_ai.model import Anomaly
from otel_ai.timefmt import format_duration
from otel_ai.windows import WindowView

MIN_LOAD_RISE = 1.5
PEAK_FRACTION = 0.8
SLOW_SHARE = 0.05  # requests above the usual p95, normally
ERROR_RISE = 0.02  # errors up by more than this (and doubled): an error incident, not capacity
SATURATED = 0.95


class CapacityWarning:
    event_type = "CAPACITY_WARNING"
    counters = (REQUESTS, ERRORS, BUSY_MS)
    captures = ()
    suspect_keys = ("tenant.id", "enduser.id", "client.address", "user_agent.original")
    tally_keys = ("tenant.id",)

    def __init__(self, rule: EventRule):
        self.rule = rule
        self.threshold = rule.threshold / 100.0
        self.resources = ResourceSaturation(rule)

    def describe(self) -> str:
        return (f"utilization estimated from latency under load >= {self.rule.threshold:g}% on routes "
                f"(load >= {MIN_LOAD_RISE:g}x usual, errors flat), or {self.resources.describe()}; "
                f"{rule_text(self.rule)}")

    def _utilization(self, view: WindowView, slots: int) -> dict[str, np.ndarray]:
        """Per subject over the last `slots` slots: requests, rate, mean latency, concurrency, rho."""
        seconds = slots * view.slot_s
        n, busy = view.sum(REQUESTS.name, slots), view.sum(BUSY_MS.name, slots)
        usual_ms = view.baselines.mean_per_request(BUSY_MS.name, view.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_ms = np.where(n > 0, busy / n, np.nan)
            rho = np.nan_to_num(1.0 - usual_ms / mean_ms, nan=0.0)
        return {"n": n, "rate": n / seconds, "mean_ms": mean_ms, "concurrency": busy / (seconds * 1000.0),
                "rho": np.clip(rho, 0.0, 1.0), "errors": view.sum(ERRORS.name, slots) / np.maximum(n, 1)}

    def _loaded(self, view: WindowView, now: dict[str, np.ndarray]) -> np.ndarray:
        """Subjects under clearly more load than usual, with errors flat."""
        size = view.size
        usual_rate = view.baselines.per_second(REQUESTS.name, size)
        usual_errors = view.baselines.rate(ERRORS.name, size)
        return ((view.kinds[:size] == ROUTE_KIND) & view.baselines.warm(size)
                & (now["n"] >= self.rule.min_samples) & (now["rate"] >= MIN_LOAD_RISE * usual_rate)
                & (now["errors"] < np.maximum(2.0 * usual_errors, usual_errors + ERROR_RISE)))

    def detect(self, view: WindowView) -> list[Anomaly]:
        peak = view.baselines.peak_concurrency(view.size)
        recent = self._utilization(view, CONFIRM_SLOTS)
        found: dict[int, Anomaly] = {}
        for slots, alpha in window_plan(view, self.rule, short=False):
            now = self._utilization(view, slots)
            candidate = (self._loaded(view, now) & (now["rho"] >= self.threshold)
                         & (now["concurrency"] >= PEAK_FRACTION * peak) & (recent["rho"] >= self.threshold / 2))
            ids = np.flatnonzero(candidate)
            if ids.shape[0] == 0:
                continue
            usual_p95 = view.baselines.latency_percentile(ids, 0.95)
            slow = share_above(view.hist(slots, ids), np.nan_to_num(usual_p95, nan=np.inf)) * now["n"][ids]
            scale = evidence_scale(view, slots)[ids]
            score = rate_surprise(view, ids, slow * scale, now["n"][ids] * scale, np.full(ids.shape[0], SLOW_SHARE),
                                  SLOW, slots)
            for j in np.flatnonzero((slow * scale >= MIN_BAD) & (score >= alpha)):
                sid = int(ids[j])
                if sid not in found:
                    found[sid] = self._anomaly(view, sid, slots, now, float(usual_p95[j]), int(round(slow[j])),
                                               float(score[j]))
        return list(found.values()) + self.resources.detect(view)

    def _anomaly(self, view: WindowView, sid: int, slots: int, now: dict[str, np.ndarray], usual_p95: float,
                 slow: int, neg_log_p: float) -> Anomaly:
        size = view.size
        rho, rate = float(now["rho"][sid]), float(now["rate"][sid])
        ends, values = self.series(view, sid)
        trend = trend_of(ends, values, 100.0 * self.threshold)
        breach = rho / self.threshold
        conf, factors = confidence(neg_log_p, slow, breach, trend)
        usual_rate = float(view.baselines.per_second(REQUESTS.name, size)[sid])
        usual_ms = float(view.baselines.mean_per_request(BUSY_MS.name, size)[sid])
        details = {
            "request_rate_per_s": round(rate, 2), "baseline_request_rate_per_s": round(usual_rate, 2),
            "latency_mean_ms": round(float(now["mean_ms"][sid]), 1), "baseline_latency_mean_ms": round(usual_ms, 1),
            "concurrency": round(float(now["concurrency"][sid]), 2),
            "peak_concurrency": round(float(view.baselines.peak_concurrency(size)[sid]), 2),
            "time_to_saturation_s": self._time_to_saturation(view, sid, rho, rate),
        }
        anomaly = Anomaly(
            type=self.event_type, severity=self.rule.severity, subject_id=sid, subject=view.subjects[sid],
            metric="utilization_estimate", unit="%", value=round(100.0 * rho, 1), threshold=self.rule.threshold,
            baseline=None, window=format_duration(slots * view.slot_s), breach_ratio=round(breach, 2), trend=trend,
            confidence=conf, confidence_factors=factors,
            recent_samples=[(int(t), round(float(v), 1)) for t, v in zip(ends, values) if not np.isnan(v)],
            sample_count=int(round(now["n"][sid])), bad_count=slow, event_time_ns=view.end_ns,
            bad_rule="slow", slow_threshold_ms=round(usual_p95, 1), p_value=float(np.exp(-neg_log_p)),
            details=details, suspect_keys=self.suspect_keys, tally_keys=self.tally_keys,
        )
        anomaly.summary = self.summary(anomaly)
        return anomaly

    @staticmethod
    def _time_to_saturation(view: WindowView, sid: int, rho: float, rate: float) -> float | None:
        """Seconds until the rate reaches rate / rho at its recent slope; None when not rising."""
        if rho >= SATURATED:
            return 0.0
        rates = view.series(REQUESTS.name, sid, TREND_SLOTS) / view.slot_s
        t = (view.slot_ends(TREND_SLOTS) - view.end_ns) / 1e9
        slope = np.polyfit(t, rates, 1)[0] if rates.shape[0] >= 3 else 0.0
        if slope <= 0:
            return None
        return round(float((rate / max(rho, 1e-9) - rate) / slope), 0)

    def series(self, view: WindowView, sid: int) -> tuple[np.ndarray, np.ndarray]:
        count, busy = view.series(REQUESTS.name, sid, TREND_SLOTS), view.series(BUSY_MS.name, sid, TREND_SLOTS)
        usual_ms = view.baselines.mean_per_request(BUSY_MS.name, view.size)[sid]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(count > 0, 100.0 * np.clip(1.0 - usual_ms * count / busy, 0.0, 1.0), np.nan)
        return view.slot_ends(TREND_SLOTS), values

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        if view.kinds[sid] == INSTANCE_KIND:
            return self.resources.current(view, sid, metric)
        now = self._utilization(view, MEDIUM_SLOTS)
        return round(100.0 * float(now["rho"][sid]), 1) if now["n"][sid] > 0 else None

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        instances = view.kinds[subject_ids] == INSTANCE_KIND
        out = self.resources.healthy(view, subject_ids[instances])
        now = self._utilization(view, MEDIUM_SLOTS)
        loaded = self._loaded(view, now)
        for sid in subject_ids[~instances]:
            if sid >= view.size or now["n"][sid] < self.rule.min_samples:
                out[int(sid)] = None
            else:
                out[int(sid)] = bool(not loaded[sid] or now["rho"][sid] < HEALTHY_FRACTION * self.threshold)
        return out

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        if "resource" in anomaly.details:
            return ResourceSaturation.summary(anomaly)
        d = anomaly.details
        load = d["request_rate_per_s"] / max(d["baseline_request_rate_per_s"], 1e-9)
        text = (f"Capacity warning on {where(anomaly.subject)}: about {anomaly.value:.0f}% utilized "
                f"(mean latency {d['latency_mean_ms']:.0f} ms vs {d['baseline_latency_mean_ms']:.0f} ms usual at "
                f"{load:.1f}x the usual load, threshold {anomaly.threshold:g}%)")
        eta = d["time_to_saturation_s"]
        if eta is None:
            return text + "; load not rising further"
        if eta == 0:
            return text + ": saturated now"
        when = f"{eta:.0f} s" if eta < 90 else f"{eta / 60:.0f} min"
        return text + f"; saturation in about {when} at this trend"
