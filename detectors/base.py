"""The one interface every detector implements, and the statistics they share.

A detector is built from its event rule (config `events.<TYPE>`), says which window
counters it needs and which requests the suspects stage should capture as bad, looks at
a WindowView (window sums for every subject as of one closed slot) and returns Anomaly
records; it also says, for subjects with open incidents, whether they look healthy
again. Like river's detectors, they all have the same small API, so the pipeline runs
them in a loop and a new one is a copy of a neighbour (see docs/development.md).

Evidence is judged on several windows at once, as multi-window burn-rate alerts do:
a short window fires only on strong evidence (a tiny p-value), the configured window
also fires on weaker but sustained evidence. Every window needs `minSamples`
requests, at least MIN_BAD bad ones, a breach of the threshold, and significance
against the subject's own baseline, so low-traffic and steadily flaky routes stay
quiet. Hysteresis: once open, an incident counts as healthy only below
HEALTHY_FRACTION of the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from otel_ai.baseline import SLOW
from otel_ai.config import EventRule
from otel_ai.counters import ERRORS, REQUESTS, SQUARED_WEIGHTS, Counter
from otel_ai.histogram import percentile, share_above
from otel_ai.model import DEPENDENCY, Anomaly, Subject
from otel_ai.timefmt import format_duration
from otel_ai.windows import WindowView

MIN_BAD = 3
HEALTHY_FRACTION = 0.8
SHORT_SLOTS = 1  # one slot (10 s by default): strong evidence only
MEDIUM_SLOTS = 6  # one minute
# -ln(p) needed per window, short to long; p-values from a Chernoff bound of the
# binomial tail, which is conservative (it over-states p).
ALPHA_SHORT = 18.4  # p < 1e-8
ALPHA_MEDIUM = 16.1  # p < 1e-7
ALPHA_LONG = 13.8  # p < 1e-6
COLD_PENALTY = 4.6  # without a trusted baseline, demand 100x stronger evidence
CONFIRM_SLOTS = 3  # longer windows must still breach over the last 30 s
BEYOND_PEAK = 1.5  # a share this much above a subject's highest burst is news whatever its burstiness
TREND_SLOTS = 12
ROUTE_KIND, DEPENDENCY_KIND = 0, 1
SUBJECT_NOUNS = {ROUTE_KIND: "routes", DEPENDENCY_KIND: "dependencies"}


class Detector(Protocol):
    """What the pipeline needs from a detector; plugins implement the same."""

    event_type: str
    counters: tuple[Counter, ...]  # what the windows must count for it
    captures: tuple[Counter, ...]  # requests to capture as bad for suspects (errors and slow ones always are)

    def detect(self, view: WindowView) -> list[Anomaly]:
        """Anomalies as of the view's closed slot."""
        ...

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        """For each subject: True healthy, False still breaching, None no data."""
        ...

    def describe(self) -> str:
        """One line for `otel-ai check`: what it watches and when it fires."""
        ...

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        """The incident's metric over the last minute, None without traffic (the value at recovery)."""
        ...

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        """The incident's one-line summary, in the words of its type."""
        ...


@dataclass(slots=True)
class Hit:
    sid: int
    slots: int
    requests: int
    bad: int
    value: float  # in the detector's unit
    threshold: float
    baseline: float | None
    neg_log_p: float


def neg_log_binomial_tail(bad: np.ndarray, n: np.ndarray, p0: np.ndarray,
                          independent: np.ndarray | None = None) -> np.ndarray:
    """-ln P(X >= bad) for X ~ Binomial(n, p0), by the Chernoff bound n*KL(bad/n || p0),
    with the share bad/n weighed as `independent` trials when given (fewer than n when
    requests fail together). 0 where the observed rate is not above p0."""
    n = np.maximum(n.astype(np.float64), 1.0)
    q = np.clip(bad / n, 1e-12, 1 - 1e-12)
    p = np.clip(p0, 1e-12, 1 - 1e-12)
    kl = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    return np.where(q > p, (n if independent is None else independent) * kl, 0.0)


def rate_surprise(view: WindowView, ids: np.ndarray, bad: np.ndarray, n: np.ndarray, p0: np.ndarray,
                  counter: str, slots: int) -> np.ndarray:
    """How surprising `bad` of `n` requests over `slots` slots are for the subjects `ids`,
    whose usual share of `counter`'s bad requests is p0, as -ln p. The one statistical
    test of every share-based detector (docs/detection.md, "The test"): the larger of
      - usual: the share against p0, with the n requests counted as n / (1 + rho (m - 1))
        independent ones, rho being the subject's learnt burstiness (baseline.py) and m
        the requests per window of the scale it was learnt at, so that a burst of its
        usual size is no news;
      - beyond: the share against BEYOND_PEAK times the highest share the subject has
        shown, with every request counted, so that bursts do not hide an outage."""
    rho, units, peak = view.baselines.dispersion(counter, ids, slots)
    design_effect = 1.0 + rho * np.maximum(n / units - 1.0, 0.0)
    usual = neg_log_binomial_tail(bad, n, p0, n / design_effect)
    beyond = neg_log_binomial_tail(bad, n, np.maximum(p0, BEYOND_PEAK * peak))
    return np.maximum(usual, beyond)


def evidence_scale(view: WindowView, slots: int) -> np.ndarray:
    """Per subject, how many independent observations one weighted request is worth:
    Kish's effective sample size over the weighted count, sum(w) / sum(w^2). 1 for
    unsampled spans and metric points; 1/100 for spans head-sampled at 1 %. Counts,
    rates and minSamples use the weights; MIN_BAD and the significance tests use the
    counts times this, so a few sampled spans that stand for many requests are weighed
    as the few observations they are."""
    n, squared = view.sum(REQUESTS.name, slots), view.sum(SQUARED_WEIGHTS.name, slots)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(squared > 0, np.minimum(n / squared, 1.0), 1.0)


def window_plan(view: WindowView, rule: EventRule, short: bool = True) -> list[tuple[int, float]]:
    """(slots, alpha) pairs from short to long, without duplicates. Detectors that must
    not fire on a short burst (short=False) get neither the 10 s window nor a window
    longer than the history seen so far, which would hold only its last part."""
    plan = [(MEDIUM_SLOTS, ALPHA_MEDIUM), (view.slots_for(rule.window), ALPHA_LONG)]
    if short:
        plan.insert(0, (SHORT_SLOTS, ALPHA_SHORT))
    else:
        plan = [(slots, alpha) for slots, alpha in plan if slots <= view.seen_slots]
    seen: dict[int, float] = {}
    for slots, alpha in plan:
        seen[slots] = min(alpha, seen.get(slots, alpha))
    return sorted(seen.items())


def confidence(neg_log_p: float, bad: int, breach_ratio: float, trend: str) -> tuple[float, dict[str, float]]:
    """Documented in docs/detection.md: a weighted mean of four factors in 0..1."""
    factors = {
        "significance": min(1.0, neg_log_p / 27.6),  # 1.0 at p <= 1e-12
        "sample_size": 1.0 - float(np.exp(-bad / 8.0)),  # 0.63 at 8 bad requests, 0.95 at 24
        "breach_ratio": float(np.clip(1.0 - np.exp(-(breach_ratio - 1.0) * 1.5), 0.0, 1.0)),
        "trend": {"rising": 1.0, "stable": 0.85, "falling": 0.6}[trend],
    }
    score = (0.3 * factors["significance"] + 0.25 * factors["sample_size"]
             + 0.3 * factors["breach_ratio"] + 0.15 * factors["trend"])
    return round(float(np.clip(score, 0.0, 1.0)), 3), {k: round(v, 3) for k, v in factors.items()}


def trend_of(ends_ns: np.ndarray, values: np.ndarray, threshold: float) -> str:
    """Least-squares slope over the recent slots, relative to the threshold."""
    ok = ~np.isnan(values)
    if ok.sum() < 3:
        return "stable"
    t = (ends_ns[ok] - ends_ns[ok][0]) / 1e9
    if t[-1] <= 0:
        return "stable"
    slope = np.polyfit(t, values[ok], 1)[0]
    change = slope * t[-1] / max(threshold, 1e-9)
    if change > 0.1:
        return "rising"
    if change < -0.1:
        return "falling"
    return "stable"


def rule_text(rule: EventRule) -> str:
    """The common part of every detector's line in `otel-ai check`."""
    return f"window {format_duration(rule.window)}, minSamples {rule.min_samples}, {rule.severity}"


def where(subject: Subject) -> str:
    """How summaries name a subject: 'POST /api/checkout' or 'calls to payments-api'."""
    return f"calls to {subject.service}" if subject.kind == DEPENDENCY else subject.label()


def with_baseline(text: str, anomaly: Anomaly, unit: str = "%") -> str:
    """'... (threshold 10%)' -> '... (threshold 10%, baseline 0.4%)' when there is one."""
    return text if anomaly.baseline is None else text[:-1] + f", baseline {anomaly.baseline:g}{unit})"


def share_summary(title: str, anomaly: Anomaly, what: str) -> str:
    """'<title>: 36.4% of GET /x <what> (threshold 25%, baseline 5.1%)'."""
    text = f"{title}: {anomaly.value:.1f}% of {where(anomaly.subject)} {what} (threshold {anomaly.threshold:g}%)"
    return with_baseline(text, anomaly)


class RateDetector:
    """The share of bad requests per subject (errors by default) against an adaptive
    threshold. Subclasses choose the bad counter, the subjects, the unit and the words."""

    event_type: ClassVar[str] = ""
    Rule: ClassVar[type[EventRule]] = EventRule  # the config fields of events.<TYPE>
    subject_kind: ClassVar[int] = ROUTE_KIND
    bad: ClassVar[Counter] = ERRORS  # which requests are bad
    bad_noun: ClassVar[str] = "server errors"
    adaptive: ClassVar[bool] = True  # False: the configured threshold is never lowered by the baseline
    short_window: ClassVar[bool] = True  # False: a 10 s burst alone never fires
    metric: ClassVar[str] = "error_rate"
    unit: ClassVar[str] = "%"
    suspect_keys: ClassVar[tuple[str, ...]] = ()
    tally_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, rule: EventRule):
        self.rule = rule
        self.static = rule.threshold / 100.0

    @property
    def counters(self) -> tuple[Counter, ...]:
        return (REQUESTS, self.bad)

    @property
    def captures(self) -> tuple[Counter, ...]:
        return () if self.bad is ERRORS else (self.bad,)

    @property
    def bad_rule(self) -> str:
        return "error" if self.bad is ERRORS else self.bad.name

    def describe(self) -> str:
        lowered = "adaptive below it on a warm baseline" if self.adaptive else "never lowered"
        return (f"share of {self.bad_noun} on {SUBJECT_NOUNS[self.subject_kind]} >= {self.rule.threshold:g}"
                f"{self.unit} ({lowered}); {rule_text(self.rule)}")

    # ---- the share, and how it is reported

    def measure(self, share: np.ndarray | float) -> np.ndarray | float:
        """A share of bad requests in the reported unit."""
        return 100.0 * share

    def thresholds(self, view: WindowView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(threshold share, usual share p0, warm) per subject."""
        size = view.size
        base = view.baselines.rate(self.bad.name, size)
        warm = view.baselines.warm(size)
        if self.adaptive:
            adaptive = np.maximum(3.0 * base, base + 0.02)
            thr = np.where(warm, np.maximum(np.minimum(self.static, adaptive), base + 0.02), self.static)
            p0 = np.where(warm, np.maximum(base, 0.001), np.maximum(base, 0.01))
        else:
            thr = np.maximum(self.static, np.where(warm, base + 0.1, 0.0))
            # The threshold is the point: a share must be significantly above half of it (and
            # above the baseline), so a few requests that happen to reach it do not fire.
            p0 = np.maximum(base, self.static / 2)
        return thr, p0, warm

    # ---- the detector API

    def hits(self, view: WindowView) -> list[Hit]:
        thr, p0, warm = self.thresholds(view)
        mine = view.kinds[: view.size] == self.subject_kind
        base = view.baselines.rate(self.bad.name, view.size)
        recent_n, recent_e = view.sum(REQUESTS.name, CONFIRM_SLOTS), view.sum(self.bad.name, CONFIRM_SLOTS)
        recent_rate = recent_e / np.maximum(recent_n, 1)
        found: dict[int, Hit] = {}
        for slots, alpha in window_plan(view, self.rule, self.short_window):
            n, e = view.sum(REQUESTS.name, slots), view.sum(self.bad.name, slots)
            rate = e / np.maximum(n, 1)
            scale = evidence_scale(view, slots)
            candidate = mine & (n >= self.rule.min_samples) & (e * scale >= MIN_BAD) & (rate >= thr)
            if slots > CONFIRM_SLOTS:
                candidate &= (recent_n > 0) & (recent_rate >= thr / 2)
            ids = np.flatnonzero(candidate)
            if ids.shape[0] == 0:
                continue
            score = rate_surprise(view, ids, e[ids] * scale[ids], n[ids] * scale[ids], p0[ids], self.bad.name, slots)
            needed = alpha + np.where(warm[ids], 0.0, COLD_PENALTY)
            for sid, s in zip(ids[score >= needed], score[score >= needed]):
                if sid not in found:  # the shortest window that fires reports
                    found[int(sid)] = Hit(int(sid), slots, int(round(n[sid])), int(round(e[sid])),
                                          float(self.measure(rate[sid])), float(self.measure(thr[sid])),
                                          float(self.measure(base[sid])) if warm[sid] else None, float(s))
        return list(found.values())

    def detect(self, view: WindowView) -> list[Anomaly]:
        return [self.anomaly(view, hit) for hit in self.hits(view)]

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        n, bad = view.sum(REQUESTS.name, MEDIUM_SLOTS)[sid], view.sum(self.bad.name, MEDIUM_SLOTS)[sid]
        return round(float(self.measure(bad / n)), 2) if n > 0 else None

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        thr, _, _ = self.thresholds(view)
        n, e = view.sum(REQUESTS.name, MEDIUM_SLOTS), view.sum(self.bad.name, MEDIUM_SLOTS)
        out: dict[int, bool | None] = {}
        for sid in subject_ids:
            if sid >= view.size or n[sid] < self.rule.min_samples:
                out[int(sid)] = None
            else:
                out[int(sid)] = bool(self.measure(e[sid] / n[sid]) < HEALTHY_FRACTION * self.measure(thr[sid]))
        return out

    def series(self, view: WindowView, sid: int) -> tuple[np.ndarray, np.ndarray]:
        count, bad = view.series(REQUESTS.name, sid, TREND_SLOTS), view.series(self.bad.name, sid, TREND_SLOTS)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(count > 0, self.measure(bad / count), np.nan)
        return view.slot_ends(TREND_SLOTS), values

    def anomaly(self, view: WindowView, hit: Hit) -> Anomaly:
        ends, values = self.series(view, hit.sid)
        trend = trend_of(ends, values, hit.threshold)
        breach = hit.value / max(hit.threshold, 1e-9)
        conf, factors = confidence(hit.neg_log_p, hit.bad, breach, trend)
        anomaly = Anomaly(
            type=self.event_type, severity=self.severity(hit), subject_id=hit.sid,
            subject=view.subjects[hit.sid], metric=self.metric, unit=self.unit,
            value=round(hit.value, 2), threshold=round(hit.threshold, 2),
            baseline=None if hit.baseline is None else round(hit.baseline, 3),
            window=format_duration(hit.slots * view.slot_s), breach_ratio=round(breach, 2), trend=trend,
            confidence=conf, confidence_factors=factors,
            recent_samples=[(int(t), round(float(v), 2)) for t, v in zip(ends, values) if not np.isnan(v)],
            sample_count=hit.requests, bad_count=hit.bad, event_time_ns=view.end_ns,
            bad_rule=self.bad_rule, slow_threshold_ms=self.slow_threshold(hit),
            p_value=float(np.exp(-hit.neg_log_p)), details=self.details(hit),
            suspect_keys=self.suspect_keys, tally_keys=self.tally_keys,
        )
        anomaly.summary = self.summary(anomaly)
        return anomaly

    # ---- what subclasses usually change

    def severity(self, hit: Hit) -> str:
        return self.rule.severity

    def details(self, hit: Hit) -> dict:
        return {}

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        text = f"Error rate {anomaly.value:.1f}% on {where(anomaly.subject)} (threshold {anomaly.threshold:g}%)"
        return with_baseline(text, anomaly)

    def slow_threshold(self, hit: Hit) -> float:
        return 0.0


class LatencyDetector(RateDetector):
    """A percentile of the latency histogram against an adaptive threshold; the bad
    requests are those slower than the threshold, tested like errors."""

    metric = "latency_p95"
    unit = "ms"
    quantile = 0.95

    def __init__(self, rule: EventRule, static_ms: float | None = None):
        self.rule = rule
        self.static_ms = static_ms if static_ms is not None else rule.threshold

    @property
    def counters(self) -> tuple[Counter, ...]:
        return (REQUESTS,)  # and the latency histograms, which every window keeps

    @property
    def bad_rule(self) -> str:
        return "slow"

    def describe(self) -> str:
        return (f"p95 latency on {SUBJECT_NOUNS[self.subject_kind]} >= {self.static_ms:g} ms (adaptive below it "
                f"on a warm baseline); {rule_text(self.rule)}")

    def latency_thresholds(self, view: WindowView, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(threshold ms, baseline percentile ms or NaN, warm) for the given subjects."""
        warm = view.baselines.warm(view.size)[ids]
        base = view.baselines.latency_percentile(ids, self.quantile)
        adaptive = np.maximum(3.0 * base, base + 100.0)
        thr = np.where(warm & ~np.isnan(base), np.maximum(np.minimum(self.static_ms, adaptive), base + 50.0), self.static_ms)
        return thr, np.where(warm, base, np.nan), warm & ~np.isnan(base)

    def hits(self, view: WindowView) -> list[Hit]:
        mine = view.kinds[: view.size] == self.subject_kind
        found: dict[int, Hit] = {}
        for slots, alpha in window_plan(view, self.rule):
            n = view.sum(REQUESTS.name, slots)
            ids = np.flatnonzero(mine & (n >= self.rule.min_samples))
            if ids.shape[0] == 0:
                continue
            hist = view.hist(slots, ids)
            value = percentile(hist, self.quantile)
            thr, base, warm = self.latency_thresholds(view, ids)
            slow = share_above(hist, thr) * n[ids]
            scale = evidence_scale(view, slots)[ids]
            p0 = np.where(warm, np.maximum(view.baselines.latency_share_above(ids, thr), 0.01), 0.05)
            score = rate_surprise(view, ids, slow * scale, n[ids] * scale, p0, SLOW, slots)
            needed = alpha + np.where(warm, 0.0, COLD_PENALTY)
            fire = (value >= thr) & (slow * scale >= MIN_BAD) & (score >= needed)
            if slots > CONFIRM_SLOTS and fire.any():
                recent = percentile(view.hist(CONFIRM_SLOTS, ids), self.quantile)
                fire &= ~np.isnan(recent) & (recent >= thr / 2)
            for j in np.flatnonzero(fire):
                sid = int(ids[j])
                if sid not in found:
                    found[sid] = Hit(sid, slots, int(round(n[sid])), int(round(slow[j])), float(value[j]), float(thr[j]),
                                     None if np.isnan(base[j]) else float(base[j]), float(score[j]))
        return list(found.values())

    def current(self, view: WindowView, sid: int, metric: str) -> float | None:
        p95 = percentile(view.hist(MEDIUM_SLOTS, np.array([sid], dtype=np.int64)), self.quantile)[0]
        return None if np.isnan(p95) else round(float(p95), 1)

    def healthy(self, view: WindowView, subject_ids: np.ndarray) -> dict[int, bool | None]:
        ids = np.array([s for s in subject_ids if s < view.size], dtype=np.int64)
        out: dict[int, bool | None] = {int(s): None for s in subject_ids}
        if ids.shape[0] == 0:
            return out
        n = view.sum(REQUESTS.name, MEDIUM_SLOTS)
        value = percentile(view.hist(MEDIUM_SLOTS, ids), self.quantile)
        thr, _, _ = self.latency_thresholds(view, ids)
        for j, sid in enumerate(ids):
            if n[sid] >= self.rule.min_samples:
                out[int(sid)] = bool(value[j] < HEALTHY_FRACTION * thr[j])
        return out

    def series(self, view: WindowView, sid: int) -> tuple[np.ndarray, np.ndarray]:
        return view.slot_ends(TREND_SLOTS), percentile(view.hist_series(sid, TREND_SLOTS), self.quantile)

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        text = f"p95 latency {anomaly.value:.0f} ms on {where(anomaly.subject)} (threshold {anomaly.threshold:.0f} ms)"
        return with_baseline(text, anomaly, " ms")

    def slow_threshold(self, hit: Hit) -> float:
        return hit.threshold
