"""What normal looks like for every subject: exponentially weighted error counts and
latency histograms, learnt from closed slots.

The baseline learns with a lag (a slot is learnt a minute after it closes) and not at
all while the subject has an open incident, so that an incident's own data does not
become the new normal before the detectors have had their say.
"""
from __future__ import annotations

import numpy as np

from otel_ai.histogram import BINS, percentile, share_above

HALF_LIFE_S = 1800.0
# A Bayesian prior of 1 % errors worth 100 requests, so that a young baseline is
# neither zero (everything looks like a spike) nor noise.
PRIOR_ERROR_RATE = 0.01
PRIOR_WEIGHT = 100.0
WARM_WEIGHT = 200.0  # requests (decayed) before the baseline is trusted
WARM_SLOTS = 30  # and slots of history
LEARN_LAG_SLOTS = 6


class Baselines:
    def __init__(self, slot_s: float):
        self.decay = 0.5 ** (slot_s / HALF_LIFE_S)
        self.count = np.zeros(0)
        self.errors = np.zeros(0)
        self.hist = np.zeros((0, BINS), dtype=np.float32)
        self.slots_seen = np.zeros(0, dtype=np.int32)

    def ensure(self, size: int) -> None:
        old = self.count.shape[0]
        if size <= old:
            return
        new = max(size, old * 2, 64)
        self.count = np.concatenate((self.count, np.zeros(new - old)))
        self.errors = np.concatenate((self.errors, np.zeros(new - old)))
        self.hist = np.concatenate((self.hist, np.zeros((new - old, BINS), dtype=np.float32)))
        self.slots_seen = np.concatenate((self.slots_seen, np.zeros(new - old, dtype=np.int32)))

    def learn(self, count: np.ndarray, errors: np.ndarray, hist: np.ndarray, frozen: np.ndarray) -> None:
        """Fold one slot (arrays over all subjects) into the baselines, except frozen ones."""
        size = count.shape[0]
        self.ensure(size)
        live = ~frozen
        c, e, h = self.count[:size], self.errors[:size], self.hist[:size]
        c[live] = c[live] * self.decay + count[live]
        e[live] = e[live] * self.decay + errors[live]
        active = live & (count > 0)
        if active.any():
            h[active] = h[active] * self.decay + hist[active]
        self.slots_seen[:size][live & (self.count[:size] > 0)] += 1

    def error_rate(self, size: int) -> np.ndarray:
        self.ensure(size)
        return (self.errors[:size] + PRIOR_ERROR_RATE * PRIOR_WEIGHT) / (self.count[:size] + PRIOR_WEIGHT)

    def warm(self, size: int) -> np.ndarray:
        self.ensure(size)
        return (self.count[:size] >= WARM_WEIGHT) & (self.slots_seen[:size] >= WARM_SLOTS)

    def latency_percentile(self, ids: np.ndarray, q: float) -> np.ndarray:
        return percentile(self.hist[ids], q)

    def latency_share_above(self, ids: np.ndarray, threshold_ms: np.ndarray) -> np.ndarray:
        return share_above(self.hist[ids], threshold_ms)
