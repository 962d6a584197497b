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
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from otel_ai.metrics import semconv
from otel_ai.metrics.points import SeriesKey, UtilizationSample

NS_PER_S = 10**9
MIN_T = 4.0  # slope t statistic for a significant rise
MAX_ROUTES_PER_INSTANCE = 32


@dataclass(frozen=True, slots=True)
class Trend:
    level: float  # the fitted ratio at the last sample ("now")
    slope: float  # ratio per second
    slope_t: float  # slope / its standard error (inf for an exact line)


def fit_trend(times_s: np.ndarray, ratios: np.ndarray, min_points: int = 5) -> Trend | None:
    """Least-squares line through the samples; None with fewer than `min_points` finite
    samples or no spread in time."""
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
    slope_se = np.sqrt((residual ** 2).sum() / (t.shape[0] - 2) / spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_t = slope / slope_se if slope_se > 0 else (np.inf if slope > 0 else 0.0)
    return Trend(float(level), float(slope), float(slope_t))


def time_to_saturation(times_s: np.ndarray, ratios: np.ndarray, limit: float = 1.0,
                       horizon_s: float = 3600.0, min_points: int = 5, min_t: float = 4.0) -> float | None:
    """Seconds after the last sample until the least-squares trend reaches `limit`.

    None when there are fewer than `min_points` samples, when the slope is not
    significantly positive (t statistic under `min_t`: steady or noisy series stay
    quiet), or when the crossing is beyond `horizon_s`. 0.0 when the trend is already
    at or over the limit.
    """
    trend = fit_trend(times_s, ratios, min_points)
    return None if trend is None else _seconds_to(trend, limit, horizon_s, min_t)


def _seconds_to(trend: Trend, limit: float, horizon_s: float, min_t: float) -> float | None:
    if trend.slope <= 0 or trend.slope_t < min_t:
        return None
    if trend.level >= limit:
        return 0.0
    seconds = (limit - trend.level) / trend.slope
    return float(seconds) if seconds <= horizon_s else None


@dataclass(frozen=True, slots=True)
class Forecast:
    series: SeriesKey
    time_ns: int  # of the latest sample
    ratio: float  # latest ratio of the limit
    seconds_to_saturation: float | None
    subject_id: int = -1  # the instance subject
    slope_t: float = 0.0  # how significant the rise is (0: no fit)
    samples: tuple = ()  # (time ns, ratio) of the trend window, oldest first


class SaturationStore:
    """Recent utilization ratios per series, bounded in series, samples and limits; and
    which routes each instance serves (what a capacity warning links to)."""

    def __init__(self, max_series: int = 10_000, samples_per_series: int = 60,
                 trend_window_ns: int = 15 * 60 * NS_PER_S, horizon_s: float = 3600.0) -> None:
        self.max_series = max_series
        self.samples_per_series = samples_per_series
        self.trend_window_ns = trend_window_ns
        self.horizon_s = horizon_s
        self._series: dict[SeriesKey, deque[tuple[int, float]]] = {}
        # Latest limit per (instance, resource) and container: a pod's limit is the sum.
        self._limits: dict[tuple[str, str], dict[str, float]] = {}
        self._subject: dict[SeriesKey, int] = {}  # series -> its instance subject
        # (service, instance) -> requests per route subject it served, a few routes each
        self._routes: dict[tuple[str, str], dict[int, float]] = {}

    def __len__(self) -> int:
        return len(self._series)

    def add(self, samples: list[UtilizationSample]) -> None:
        for sample in sorted(samples, key=lambda s: s.measure != semconv.LIMIT):  # limits first
            if sample.measure == semconv.LIMIT:
                self._set_limit(sample)
            elif sample.measure == semconv.RATIO:
                self._append(sample.series, sample.time_ns, sample.value, sample.subject_id)
            else:
                limit = self._limit(sample.series)
                ratio = sample.value / limit if limit else math.inf
                if math.isfinite(ratio):  # a denormal limit (5e-324) would make it inf
                    self._append(sample.series, sample.time_ns, ratio, sample.subject_id)

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

    def _append(self, series: SeriesKey, time_ns: int, ratio: float, subject_id: int) -> None:
        samples = self._series.get(series)
        if samples is None:
            if len(self._series) >= self.max_series:
                for old in list(itertools.islice(self._series, self.max_series // 16 or 1)):
                    del self._series[old]
                    self._subject.pop(old, None)
            samples = self._series[series] = deque(maxlen=self.samples_per_series)
            self._subject[series] = subject_id
        if samples and time_ns <= samples[-1][0]:
            return  # a duplicate or an out-of-order sample
        samples.append((time_ns, ratio))

    def forecast(self, series: SeriesKey) -> Forecast | None:
        samples = self._series.get(series)
        if not samples:
            return None
        last_ns = samples[-1][0]
        recent = tuple((t, r) for t, r in samples if t >= last_ns - self.trend_window_ns)
        times = np.array([t for t, _ in recent], dtype=np.float64) / NS_PER_S
        ratios = np.array([r for _, r in recent])
        trend = fit_trend(times, ratios)
        eta = None if trend is None else _seconds_to(trend, 1.0, self.horizon_s, MIN_T)
        return Forecast(series, last_ns, float(ratios[-1]), eta, self._subject.get(series, -1),
                        0.0 if trend is None else trend.slope_t, recent)

    def forecasts(self, min_ratio: float = 0.0) -> list[Forecast]:
        """Every series whose latest ratio is at least `min_ratio`, most urgent first
        (soonest saturation, then highest ratio)."""
        found = [f for f in (self.forecast(s) for s, samples in self._series.items() if samples[-1][1] >= min_ratio)
                 if f is not None]
        return sorted(found, key=lambda f: (f.seconds_to_saturation is None, f.seconds_to_saturation or 0.0, -f.ratio))

    def of_subject(self, subject_id: int) -> list[Forecast]:
        """The forecasts of one instance subject's series (CPU, memory, per source)."""
        return [f for f in (self.forecast(s) for s, sid in self._subject.items() if sid == subject_id)
                if f is not None]

    # ---- which routes an instance serves
    def note_routes(self, service: str, instance: str, subject_ids: np.ndarray, requests: np.ndarray) -> None:
        key = (service, instance)
        served = self._routes.get(key)
        if served is None:
            if len(self._routes) >= self.max_series:
                self._routes.pop(next(iter(self._routes)))
            served = self._routes[key] = {}
        for sid, n in zip(subject_ids.tolist(), requests.tolist()):
            if sid in served or len(served) < MAX_ROUTES_PER_INSTANCE:
                served[sid] = served.get(sid, 0.0) + n

    def routes_of(self, service: str, instance: str, top: int = 5) -> list[int]:
        """The route subjects an instance served the most requests of."""
        served = self._routes.get((service, instance), {})
        return [sid for sid, _ in sorted(served.items(), key=lambda kv: -kv[1])[:top]]
