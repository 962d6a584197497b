"""OTLP histogram buckets -> otel-ai's fixed log-scale latency bins (otel_ai.histogram).

Any bucket layout (explicit bounds, exponential scales, min/max) becomes the same 40
bins that spans fill, so windows and detectors never see where a histogram came from.
A bucket's count is spread log-uniformly over [lower, upper]: the same assumption the
percentile interpolation in otel_ai.histogram makes. A bucket whose lower and upper
edge coincide is a point mass (zero buckets, or min == max).
"""
from __future__ import annotations

import numpy as np

from otel_ai.histogram import BINS, LOWER_EDGES_MS

_TARGETS = LOWER_EDGES_MS[1:]  # the 39 edges between the 40 bins
_LOG_TARGETS = np.log(_TARGETS)
_TINY_MS = 1e-9
_HUGE_MS = 1e12  # ~31 years: an edge beyond this is garbage, not a duration
# Rows per numpy pass, so that (rows x buckets x 39) stays near 16 MB whatever arrives.
_CELLS_PER_PASS = 2_000_000


def rebin(lower_ms: np.ndarray, upper_ms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(k, n) bucket lower and upper edges in ms and (k, n) counts -> (k, BINS) float64
    counts; each row keeps its total."""
    lower_ms = np.clip(np.asarray(lower_ms, dtype=np.float64), 0.0, _HUGE_MS)
    upper_ms = np.clip(np.asarray(upper_ms, dtype=np.float64), lower_ms, _HUGE_MS)
    counts = np.asarray(counts, dtype=np.float64)
    k, n = counts.shape
    out = np.empty((k, BINS))
    step = max(1, _CELLS_PER_PASS // max(1, n * _TARGETS.shape[0]))
    for first in range(0, k, step):
        rows = slice(first, first + step)
        out[rows] = _rebin_rows(lower_ms[rows], upper_ms[rows], counts[rows])
    return out


def _rebin_rows(lower: np.ndarray, upper: np.ndarray, counts: np.ndarray) -> np.ndarray:
    log_lower = np.log(np.maximum(lower, _TINY_MS))[..., None]
    log_upper = np.log(np.maximum(upper, _TINY_MS))[..., None]
    width = log_upper - log_lower
    with np.errstate(divide="ignore", invalid="ignore"):
        # Share of each bucket below each target edge.
        below = np.clip((_LOG_TARGETS - log_lower) / width, 0.0, 1.0)
    point_mass = width[..., 0] <= 0
    if point_mass.any():
        below[point_mass] = (_TARGETS > lower[point_mass][:, None]).astype(np.float64)
    mass_below = np.einsum("kn,knt->kt", counts, below)
    total = counts.sum(axis=1, keepdims=True)
    cumulative = np.concatenate((np.zeros((counts.shape[0], 1)), mass_below, total), axis=1)
    return np.maximum(np.diff(cumulative, axis=1), 0.0)


def explicit_buckets(bounds_ms: np.ndarray, min_ms: np.ndarray, max_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edges in ms of explicit-bucket histograms: (k, n-1) bounds -> two
    (k, n) arrays; min_ms and max_ms are NaN where a point has none.

    OTLP buckets are (-inf, b0], (b0, b1], ..., (b_last, +inf). Durations are never
    negative, so a bucket reaching down to 0 or below starts at the point's min when
    it has one, else at half its upper bound; the last bucket ends at the max, else at
    twice its lower bound. Every edge is then clamped into [min, max], which sharpens
    the buckets that hold them.
    """
    k = bounds_ms.shape[0]
    inf = np.full((k, 1), np.inf)
    lower = np.concatenate((-inf, bounds_ms), axis=1)
    upper = np.concatenate((bounds_ms, inf), axis=1)
    no_max = (np.isnan(max_ms)[:, None]) | (max_ms[:, None] < lower)
    upper = np.where(np.isinf(upper), np.where(no_max, lower * 2.0, max_ms[:, None]), upper)
    known_min = (min_ms > 0)[:, None]  # False for NaN
    lower = np.where(lower <= 0, np.where(known_min, min_ms[:, None], upper / 2.0), lower)
    low_clamp = np.where(np.isnan(min_ms), 0.0, min_ms)[:, None]
    high_clamp = np.maximum(np.where(np.isnan(max_ms), np.inf, max_ms)[:, None], low_clamp)
    return np.clip(lower, low_clamp, high_clamp), np.clip(upper, low_clamp, high_clamp)


def exponential_buckets(scale: int, offset: int, buckets: int, ms_per_unit: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edges in ms of an exponential histogram's positive buckets: bucket
    i covers (base^i, base^(i+1)] with base = 2^(2^-scale), i starting at `offset`."""
    exponents = (offset + np.arange(buckets + 1, dtype=np.float64)) * 2.0 ** -scale
    with np.errstate(over="ignore"):
        edges = np.exp2(np.clip(exponents, -1074.0, 1023.0)) * ms_per_unit
    return edges[:-1], edges[1:]
