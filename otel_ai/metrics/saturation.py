"""CPU and memory saturation per pod, container or host, and the time left at the
current trend: the resource-metric side of CAPACITY_WARNING.

Samples come from otel_ai.metrics.decode as ratios of a limit, or as usage and limits
in cores or bytes that are joined here (usage of a pod over the sum of its
containers' limits). Each series keeps its recent ratios; `time_to_saturation` fits a
line through them and says when it crosses the limit, or None when there is no
significant rise.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

from otel_ai.metrics import semconv
from otel_ai.metrics.points import SeriesKey, UtilizationSample

NS_PER_S = 10**9


def time_to_saturation(times_s: np.ndarray, ratios: np.ndarray, limit: float = 1.0,
                       horizon_s: float = 3600.0, min_points: int = 5, min_t: float = 4.0) -> float | None:
    """Seconds after the last sample until the least-squares trend reaches `limit`.

    None when there are fewer than `min_points` samples, when the slope is not
    significantly positive (t statistic under `min_t`: steady or noisy series stay
    quiet), or when the crossing is beyond `horizon_s`. 0.0 when the trend is already
    at or over the limit.
    """
    t = np.asarray(times_s, dtype=np.float64)
    y = np.asarray(ratios, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.shape[0] < min_points:
        return None
    t = t - t[-1]  # the fitted level at t=0 is "now"
    t_mean, y_mean = t.mean(), y.mean()
    spread = ((t - t_mean) ** 2).sum()
    if spread <= 0:
        return None
    slope = ((t - t_mean) * (y - y_mean)).sum() / spread
    level = y_mean - slope * t_mean
    residual = y - (level + slope * t)
    dof = t.shape[0] - 2
    slope_se = np.sqrt((residual ** 2).sum() / dof / spread)
    if slope <= 0 or slope < min_t * slope_se:
        return None
    if level >= limit:
        return 0.0
    seconds = (limit - level) / slope
    return float(seconds) if seconds <= horizon_s else None


@dataclass(frozen=True, slots=True)
class Forecast:
    series: SeriesKey
    time_ns: int  # of the latest sample
    ratio: float  # latest ratio of the limit
    seconds_to_saturation: float | None


class SaturationStore:
    """Recent utilization ratios per series, bounded in series, samples and limits."""

    def __init__(self, max_series: int = 10_000, samples_per_series: int = 60,
                 trend_window_ns: int = 15 * 60 * NS_PER_S, horizon_s: float = 3600.0) -> None:
        self.max_series = max_series
        self.samples_per_series = samples_per_series
        self.trend_window_ns = trend_window_ns
        self.horizon_s = horizon_s
        self._series: dict[SeriesKey, deque[tuple[int, float]]] = {}
        # Latest limit per (instance, resource) and container: a pod's limit is the sum.
        self._limits: dict[tuple[str, str], dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._series)

    def add(self, samples: list[UtilizationSample]) -> None:
        for sample in sorted(samples, key=lambda s: s.measure != semconv.LIMIT):  # limits first
            if sample.measure == semconv.LIMIT:
                self._set_limit(sample)
            elif sample.measure == semconv.RATIO:
                self._append(sample.series, sample.time_ns, sample.value)
            else:
                limit = self._limit(sample.series)
                if limit:
                    self._append(sample.series, sample.time_ns, sample.value / limit)

    def _set_limit(self, sample: UtilizationSample) -> None:
        key = (sample.series.instance, sample.series.resource)
        if key not in self._limits and len(self._limits) >= self.max_series:
            self._limits.pop(next(iter(self._limits)))
        containers = self._limits.setdefault(key, {})
        if sample.series.container in containers or len(containers) < 64:
            containers[sample.series.container] = sample.value

    def _limit(self, series: SeriesKey) -> float:
        containers = self._limits.get((series.instance, series.resource), {})
        if series.container:
            return containers.get(series.container, 0.0)
        return sum(containers.values())

    def _append(self, series: SeriesKey, time_ns: int, ratio: float) -> None:
        samples = self._series.get(series)
        if samples is None:
            if len(self._series) >= self.max_series:
                for old in list(itertools.islice(self._series, self.max_series // 16 or 1)):
                    del self._series[old]
            samples = self._series[series] = deque(maxlen=self.samples_per_series)
        if samples and time_ns <= samples[-1][0]:
            return  # a duplicate or an out-of-order sample
        samples.append((time_ns, ratio))

    def forecast(self, series: SeriesKey) -> Forecast | None:
        samples = self._series.get(series)
        if not samples:
            return None
        last_ns = samples[-1][0]
        recent = [(t, r) for t, r in samples if t >= last_ns - self.trend_window_ns]
        times = np.array([t for t, _ in recent], dtype=np.float64) / NS_PER_S
        ratios = np.array([r for _, r in recent])
        return Forecast(series, last_ns, float(ratios[-1]),
                        time_to_saturation(times, ratios, horizon_s=self.horizon_s))

    def forecasts(self) -> list[Forecast]:
        """Every series, most urgent first (soonest saturation, then highest ratio)."""
        found = [f for f in (self.forecast(s) for s in self._series) if f is not None]
        return sorted(found, key=lambda f: (f.seconds_to_saturation is None, f.seconds_to_saturation or 0.0, -f.ratio))
