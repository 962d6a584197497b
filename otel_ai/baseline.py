"""What normal looks like for every subject: exponentially weighted sums of every window
counter and of the latency histograms, learnt from closed slots.

The baseline learns with a lag (a slot is learnt a minute after it closes) and not at
all while the subject has an open incident, so that an incident's own data does not
become the new normal before the detectors have had their say.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

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


class Baselines:
    def __init__(self, slot_s: float, counters: Iterable[str] = ("requests",)):
        self.slot_s = slot_s
        self.decay = 0.5 ** (slot_s / HALF_LIFE_S)
        self.sustained_decay = 0.5 ** (slot_s / SUSTAINED_HALF_LIFE_S)
        self.peak_decay = 0.5 ** (slot_s / PEAK_HALF_LIFE_S)
        self.sums = {name: np.zeros(0) for name in dict.fromkeys(("requests", *counters))}
        self.slots = np.zeros(0)  # decayed count of slots learnt: per-slot mean = sum / slots
        self.hist = np.zeros((0, BINS), dtype=np.float32)
        self.slots_seen = np.zeros(0, dtype=np.int32)
        self.sustained_busy = np.zeros(0)
        self.peak_busy = np.zeros(0)  # ms of busy time per slot

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

    def learn(self, slot: dict[str, np.ndarray], hist: np.ndarray, frozen: np.ndarray) -> None:
        """Fold one slot (counter values and histograms over all subjects) into the
        baselines, except for frozen subjects."""
        requests = slot["requests"]
        size = requests.shape[0]
        self.ensure(size)
        live = ~frozen
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
