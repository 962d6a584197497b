"""What normal looks like for every subject: exponentially weighted sums of every window
counter and of the latency histograms, learnt from closed slots, and how much each
subject's shares of bad requests vary beyond chance (its burstiness).

The baseline learns with a lag (a slot is learnt a minute after it closes) and not at
all while the subject has an open incident, so that an incident's own data does not
become the new normal before the detectors have had their say.

Burstiness, per subject and counter, at two scales (one slot, one minute): real routes
fail in bursts, so the bad requests of a window are not independent coin flips. The
learner keeps the moments of past windows' counts (decayed over SPREAD_HALF_LIFE_S) and
estimates the intra-window correlation rho of a beta-binomial by Pearson's X²:
E[X²] = k + rho (N - k) over k windows of N requests in all. Only the excess beyond what
chance alone gives (Z_DISPERSION standard deviations of X² under a plain binomial) counts,
so a steady route keeps rho = 0 and its binomial test. It also keeps, per scale, the
highest share the subject has surely shown (its peak). `slow` is a pseudo-counter for
latency: the requests of a slot above the subject's baseline p95. Counts are Kish's
effective ones (sampled spans weigh as the few observations they are). Burstiness learns from
a subject with an open incident for the incident's first BURST_MAX_S only (pipeline.py).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from otel_ai.counters import SQUARED_WEIGHTS
from otel_ai.histogram import BINS, percentile, share_above

HALF_LIFE_S = 1800.0
# A Bayesian prior of a 1 % share worth 100 requests, so that a young baseline is
# neither zero (everything looks like a spike) nor noise.
PRIOR_RATE = 0.01
PRIOR_WEIGHT = 100.0
WARM_WEIGHT = 200.0  # requests (decayed) before the baseline is trusted
WARM_SLOTS = 30  # and slots of history
LEARN_LAG_SLOTS = 6
# The highest concurrency a subject has sustained: busy time smoothed over about a
# minute, remembered as a peak that fades over a day.
SUSTAINED_HALF_LIFE_S = 60.0
PEAK_HALF_LIFE_S = 86_400.0
# Burstiness is a slow property of a subject (bursts may come an hour apart), so its
# moments are remembered longer than the usual share, and its highest burst for a day.
SPREAD_HALF_LIFE_S = 6 * 3600.0
# A burst lasts minutes: the first BURST_MAX_S of an open incident teach the subject's
# burstiness (so a burst that paged once is known next time), the rest of it is an outage.
BURST_MAX_S = 180.0
SLOW = "slow"  # requests above the baseline p95: the burstiness of latency
SCALES = (1, 6)  # slots per window whose spread is learnt: 10 s and one minute
Z_DISPERSION = 3.0  # excess X² needed, in standard deviations of X² under a plain binomial
MAX_RHO = 0.5
PEAK_Z = 2.0  # a window's share counts for the peak less this many standard errors: shown surely


class Baselines:
    def __init__(self, slot_s: float, counters: Iterable[str] = ("requests",), counts: Iterable[str] | None = None):
        """counters: every counter's name; counts: those that count requests (bad ones),
        whose burstiness is learnt (default: all but requests)."""
        self.slot_s = slot_s
        self.decay = 0.5 ** (slot_s / HALF_LIFE_S)
        self.sustained_decay = 0.5 ** (slot_s / SUSTAINED_HALF_LIFE_S)
        self.peak_decay = 0.5 ** (slot_s / PEAK_HALF_LIFE_S)
        self.spread_decay = 0.5 ** (slot_s / SPREAD_HALF_LIFE_S)
        self.sums = {name: np.zeros(0) for name in dict.fromkeys(("requests", *counters))}
        self.slots = np.zeros(0)  # decayed count of slots learnt: per-slot mean = sum / slots
        self.hist = np.zeros((0, BINS), dtype=np.float32)
        self.slots_seen = np.zeros(0, dtype=np.int32)
        self.sustained_busy = np.zeros(0)
        self.peak_busy = np.zeros(0)  # ms of busy time per slot
        # Burstiness: the last SCALES[-1] learnt slots' counts (a minute's window), and per
        # scale decayed sums over past windows of requests and windows (spread_n), and of
        # each counter's bad count e and e²/n (spread).
        counted = [n for n in self.sums if n != "requests"] if counts is None else [n for n in counts if n != "requests"]
        self.spread_names = tuple(dict.fromkeys((*counted, SLOW)))
        self.recent = {name: np.zeros((0, SCALES[-1])) for name in ("requests", *self.spread_names)}
        self._recent_at = 0  # the ring column of the newest learnt slot
        self.spread_n = np.zeros((0, len(SCALES), 2))
        self.spread = {name: np.zeros((0, len(SCALES), 2)) for name in self.spread_names}
        self.peak_share = {name: np.zeros((0, len(SCALES))) for name in self.spread_names}  # decayed maximum

    def ensure(self, size: int) -> None:
        old = self.slots.shape[0]
        if size <= old:
            return
        grow = max(size, old * 2, 64) - old
        for name, values in self.sums.items():
            self.sums[name] = np.concatenate((values, np.zeros(grow)))
        self.slots = np.concatenate((self.slots, np.zeros(grow)))
        self.hist = np.concatenate((self.hist, np.zeros((grow, BINS), dtype=np.float32)))
        self.slots_seen = np.concatenate((self.slots_seen, np.zeros(grow, dtype=np.int32)))
        self.sustained_busy = np.concatenate((self.sustained_busy, np.zeros(grow)))
        self.peak_busy = np.concatenate((self.peak_busy, np.zeros(grow)))
        for name, ring in self.recent.items():
            self.recent[name] = np.concatenate((ring, np.zeros((grow, ring.shape[1]))))
        self.spread_n = np.concatenate((self.spread_n, np.zeros((grow, *self.spread_n.shape[1:]))))
        for name, values in self.spread.items():
            self.spread[name] = np.concatenate((values, np.zeros((grow, *values.shape[1:]))))
        for name, values in self.peak_share.items():
            self.peak_share[name] = np.concatenate((values, np.zeros((grow, *values.shape[1:]))))

    def learn(self, slot: dict[str, np.ndarray], hist: np.ndarray, frozen: np.ndarray,
              spread_frozen: np.ndarray | None = None) -> None:
        """Fold one slot (counter values and histograms over all subjects) into the
        baselines, except for frozen subjects. Burstiness has its own mask (frozen by
        default): a young incident's slots are how the subject's bursts look, a long
        one's are an outage that must not become a burst to expect (pipeline.py)."""
        requests = slot["requests"]
        size = requests.shape[0]
        self.ensure(size)
        live = ~frozen
        self._learn_spread(slot, hist, ~(frozen if spread_frozen is None else spread_frozen))
        for name, sums in self.sums.items():
            if name in slot:
                s = sums[:size]
                s[live] = s[live] * self.decay + slot[name][live]
        # Slots count from a subject's first traffic on, so its usual rate is not diluted.
        counted = live & (self.sums["requests"][:size] > 0)
        self.slots[:size][counted] = self.slots[:size][counted] * self.decay + 1.0
        active = live & (requests > 0)
        if active.any():
            h = self.hist[:size]
            h[active] = h[active] * self.decay + hist[active]
        self.slots_seen[:size][live & (self.sums["requests"][:size] > 0)] += 1
        if "busy_ms" in slot:
            sustained, peak = self.sustained_busy[:size], self.peak_busy[:size]
            sustained[live] = sustained[live] * self.sustained_decay + slot["busy_ms"][live] * (1 - self.sustained_decay)
            peak[live] = np.maximum(peak[live] * self.peak_decay, sustained[live])

    def _learn_spread(self, slot: dict[str, np.ndarray], hist: np.ndarray, live: np.ndarray) -> None:
        """One more window per scale into the moments of past windows' bad counts, for
        the live subjects (the others' windows still roll, so none mixes old and new).
        Masks are weights here, not indexes: this runs per slot over every subject."""
        size = slot["requests"].shape[0]
        p95 = percentile(self.hist[:size], 0.95)
        has_p95 = ~np.isnan(p95)
        values = {**slot, SLOW: np.where(has_p95, share_above(hist, np.where(has_p95, p95, np.inf)), 0.0)
                  * slot["requests"]}
        squared = slot.get(SQUARED_WEIGHTS.name)
        if squared is not None:
            # Sampled spans: the spread of a share is learnt in Kish's effective counts (as
            # detectors test it), else sampling's own noise is learnt as burstiness.
            with np.errstate(divide="ignore", invalid="ignore"):
                effective = np.where(squared > 0, np.minimum(slot["requests"] / squared, 1.0), 1.0)
            values = {name: v * effective for name, v in values.items()}
        self._recent_at = (self._recent_at + 1) % SCALES[-1]
        for name, ring in self.recent.items():
            ring[:size, self._recent_at] = values.get(name, 0.0)
        newest_first = (self._recent_at - np.arange(SCALES[-1])) % SCALES[-1]
        for s, scale in enumerate(SCALES):
            columns = newest_first[:scale]
            n = self.recent["requests"][:size, columns].sum(axis=1)
            full = (live & (n > 0) & (self.slots_seen[:size] >= scale)).astype(np.float64)
            n_or_1 = np.where(full > 0, n, 1.0)
            self.spread_n[:size, s] = self.spread_n[:size, s] * self.spread_decay + np.stack((n * full, full), axis=-1)
            for name in self.spread_names:
                e = self.recent[name][:size, columns].sum(axis=1)
                counted = full * has_p95 if name == SLOW else full
                self.spread[name][:size, s] = (self.spread[name][:size, s] * self.spread_decay
                                               + np.stack((e * counted, e * e / n_or_1 * counted), axis=-1))
                share = np.clip(e / n_or_1, 0.0, 1.0)  # weighted counts may overshoot
                surely = share - PEAK_Z * np.sqrt(share * (1.0 - share) / n_or_1)
                peak = self.peak_share[name][:size, s]
                np.maximum(peak * self.peak_decay, np.where(counted > 0, surely, 0.0), out=peak)

    def dispersion(self, counter: str, ids: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a window of `slots` slots, at the largest learnt scale that fits it: (rho, the
        learnt intra-window correlation of `counter`'s bad requests; units, how many windows
        of that scale the window holds; peak, the highest share the subject has surely shown
        (PEAK_Z standard errors below what a window showed) at that scale, fading over
        a day). rho and peak
        are 0 for a counter whose spread is not learnt."""
        s = max(i for i, scale in enumerate(SCALES) if scale <= max(slots, 1))
        units = np.full(ids.shape[0], max(slots, 1) / SCALES[s])
        if counter not in self.spread:
            return np.zeros(ids.shape[0]), units, np.zeros(ids.shape[0])
        self.ensure(int(ids.max(initial=-1)) + 1)
        n, k = self.spread_n[ids, s, 0], self.spread_n[ids, s, 1]
        e, e2_n = self.spread[counter][ids, s, 0], self.spread[counter][ids, s, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = e / n
            pq = p * (1.0 - p)
            x2 = (e2_n - p * e) / pq
            # Var(X²) of one binomial window is 2 + (1 - 6pq) / (m pq) for m requests;
            # overlapping windows (a minute's, one per slot) are about `scale` times as
            # variable in sum.
            null_sd = np.sqrt(k * (2.0 + np.abs(1.0 - 6.0 * pq) / ((n / k) * pq)) * SCALES[s])
            rho = (x2 - k - Z_DISPERSION * null_sd) / (n - k)
        ok = (k >= 2) & (n > k) & (pq > 0) & np.isfinite(rho)
        return np.where(ok, np.clip(rho, 0.0, MAX_RHO), 0.0), units, self.peak_share[counter][ids, s]

    # ---- surviving a restart (snapshots.py keeps the blobs)

    def _rows(self) -> dict[str, np.ndarray]:
        """Every learnt per-subject array by a stable name (the last minute's counts are
        left out: after a restart they would join windows across the gap)."""
        rows = {"slots": self.slots, "hist": self.hist, "slots_seen": self.slots_seen,
                "sustained_busy": self.sustained_busy, "peak_busy": self.peak_busy, "spread_n": self.spread_n}
        rows.update({f"sums.{name}": values for name, values in self.sums.items()})
        rows.update({f"spread.{name}": values for name, values in self.spread.items()})
        rows.update({f"peak_share.{name}": values for name, values in self.peak_share.items()})
        return rows

    def snapshot(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the learnt rows of subjects `ids`, in that order."""
        self.ensure(int(ids.max(initial=-1)) + 1)
        return {name: values[ids] for name, values in self._rows().items()}

    def restore(self, arrays: dict[str, np.ndarray], ids: np.ndarray) -> None:
        """Put snapshot rows back as subjects `ids`. Arrays this version does not know
        are ignored and those it misses stay unlearnt, so a snapshot survives upgrades;
        one whose shapes do not fit (another histogram layout) is refused whole."""
        self.ensure(int(ids.max(initial=-1)) + 1)
        rows = self._rows()
        known = {name: arrays[name] for name in rows if name in arrays}
        for name, values in known.items():
            if values.shape != (ids.shape[0], *rows[name].shape[1:]):
                raise ValueError(f"baseline snapshot array {name} has shape {values.shape}, "
                                 f"expected {(ids.shape[0], *rows[name].shape[1:])}")
        for name, values in known.items():
            rows[name][ids] = values

    def traffic(self, size: int) -> np.ndarray:
        """Decayed requests per subject: which baselines are worth the most."""
        self.ensure(size)
        return self.sums["requests"][:size]

    def rate(self, counter: str, size: int, of: str = "requests") -> np.ndarray:
        """Usual share of `of` that `counter` makes up (errors per request, retries per call)."""
        self.ensure(size)
        return (self.sums[counter][:size] + PRIOR_RATE * PRIOR_WEIGHT) / (self.sums[of][:size] + PRIOR_WEIGHT)

    def per_second(self, counter: str, size: int) -> np.ndarray:
        """Usual amount per second (requests per second, busy ms per second)."""
        self.ensure(size)
        return self.sums[counter][:size] / np.maximum(self.slots[:size], 1e-9) / self.slot_s

    def mean_per_request(self, counter: str, size: int) -> np.ndarray:
        """Usual amount per request, e.g. the mean latency from busy_ms; NaN without traffic."""
        self.ensure(size)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.sums["requests"][:size] > 0, self.sums[counter][:size] / self.sums["requests"][:size],
                            np.nan)

    def peak_concurrency(self, size: int) -> np.ndarray:
        """The highest mean number of requests in flight sustained for about a minute."""
        self.ensure(size)
        return self.peak_busy[:size] / (self.slot_s * 1000.0)

    def warm(self, size: int) -> np.ndarray:
        self.ensure(size)
        return (self.sums["requests"][:size] >= WARM_WEIGHT) & (self.slots_seen[:size] >= WARM_SLOTS)

    def latency_percentile(self, ids: np.ndarray, q: float) -> np.ndarray:
        return percentile(self.hist[ids], q)

    def latency_share_above(self, ids: np.ndarray, threshold_ms: np.ndarray) -> np.ndarray:
        return share_above(self.hist[ids], threshold_ms)
