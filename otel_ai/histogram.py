"""Fixed log-scale latency histograms: percentiles without storing durations.

Bin 0 holds everything under 0.5 ms; bin i >= 1 covers [0.5*2^((i-1)/2), 0.5*2^(i/2)) ms,
so each bin is sqrt(2) wide (worst-case percentile error ~ +-19 %, ~ +-9 % with the
geometric interpolation below). The last bin is open-ended (~> 6 min).
"""
from __future__ import annotations

import numpy as np

BINS = 40
_BASE_MS = 0.5
# Lower edge of each bin in ms (bin 0 starts at 0).
LOWER_EDGES_MS = np.concatenate(([0.0], _BASE_MS * 2.0 ** (np.arange(BINS - 1) / 2.0)))
UPPER_EDGES_MS = np.concatenate((LOWER_EDGES_MS[1:], [LOWER_EDGES_MS[-1] * 2.0**0.5]))


def bin_index(duration_ms: np.ndarray) -> np.ndarray:
    """Vectorised bin of each duration."""
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.floor(2.0 * np.log2(np.maximum(duration_ms, 1e-9) / _BASE_MS)) + 1
    return np.clip(idx, 0, BINS - 1).astype(np.intp)


def percentile(hist: np.ndarray, q: float) -> np.ndarray:
    """q-quantile (0..1) of each row of a (..., BINS) count array; NaN where empty."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum(axis=-1)
    cum = np.cumsum(hist, axis=-1)
    target = q * total
    idx = np.argmax(cum >= target[..., None] - 1e-9, axis=-1)
    below = np.take_along_axis(cum, idx[..., None], axis=-1)[..., 0] - np.take_along_axis(hist, idx[..., None], axis=-1)[..., 0]
    in_bin = np.take_along_axis(hist, idx[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((target - below) / in_bin, 0.0, 1.0)
    lo = np.maximum(LOWER_EDGES_MS[idx], _BASE_MS / 2)
    hi = UPPER_EDGES_MS[idx]
    value = lo * (hi / lo) ** frac
    return np.where(total > 0, value, np.nan)


def share_above(hist: np.ndarray, threshold_ms: np.ndarray) -> np.ndarray:
    """Fraction of each row's requests slower than threshold_ms (per row), interpolating the
    bin that holds the threshold geometrically."""
    hist = np.asarray(hist, dtype=np.float64)
    thr = np.asarray(threshold_ms, dtype=np.float64)
    total = hist.sum(axis=-1)
    lo = np.maximum(LOWER_EDGES_MS, _BASE_MS / 2)
    hi = UPPER_EDGES_MS
    # Per bin: share of the bin above thr (1 if bin entirely above, 0 if below).
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.clip(np.log(hi / np.maximum(thr[..., None], 1e-9)) / np.log(hi / lo), 0.0, 1.0)
    above = (hist * part).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, above / total, 0.0)
