"""Re-binning OTLP histogram buckets into otel-ai's 40 log-scale latency bins."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.histogram import BINS, bin_index, percentile
from otel_ai.metrics import rebin as rebin_module
from otel_ai.metrics.rebin import exponential_buckets, explicit_buckets, rebin

NAN = np.array([np.nan])
DEFAULT_BOUNDS_MS = np.array([5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000], dtype=float)


def explicit_hist(samples_ms: np.ndarray, bounds_ms: np.ndarray, with_extremes: bool) -> np.ndarray:
    counts = np.bincount(np.searchsorted(bounds_ms, samples_ms, side="left"), minlength=bounds_ms.shape[0] + 1)
    lo = np.array([samples_ms.min()]) if with_extremes else NAN
    hi = np.array([samples_ms.max()]) if with_extremes else NAN
    lower, upper = explicit_buckets(bounds_ms[None, :], lo, hi)
    return rebin(lower, upper, counts[None, :].astype(float))[0]


def test_counts_are_kept_and_never_negative() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 1000, (50, 15)).astype(float)
    lower, upper = explicit_buckets(np.tile(DEFAULT_BOUNDS_MS, (50, 1)), np.full(50, np.nan), np.full(50, np.nan))
    hist = rebin(lower, upper, counts)
    assert hist.shape == (50, BINS)
    assert (hist >= 0).all()
    np.testing.assert_allclose(hist.sum(axis=1), counts.sum(axis=1))


@pytest.mark.parametrize("with_extremes", [True, False])
def test_percentiles_match_the_samples_within_bucket_resolution(with_extremes: bool) -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(np.log(40), 0.8, 20_000)  # ms: median 40, long tail
    hist = explicit_hist(samples, DEFAULT_BOUNDS_MS, with_extremes)
    for q in (0.5, 0.9, 0.99):
        true = np.quantile(samples, q)
        # The source buckets are up to 2.5x wide; the re-binned estimate stays inside them.
        assert true / 1.6 < percentile(hist, q) < true * 1.6, (q, true, percentile(hist, q))


def test_fine_exponential_buckets_agree_with_binning_the_raw_durations() -> None:
    rng = np.random.default_rng(3)
    samples_ms = rng.lognormal(np.log(120), 0.5, 50_000)
    scale = 4  # base 2^(1/16): buckets far finer than the 40 target bins
    index = np.ceil(np.log2(samples_ms / 1000.0) * 2**scale).astype(int) - 1  # (base^i, base^(i+1)] in seconds
    offset = int(index.min())
    counts = np.bincount(index - offset).astype(float)
    lower, upper = exponential_buckets(scale, offset, counts.shape[0], 1000.0)
    hist = rebin(lower[None, :], upper[None, :], counts[None, :])[0]
    direct = np.bincount(bin_index(samples_ms), minlength=BINS).astype(float)
    for q in (0.5, 0.95, 0.99):
        assert percentile(hist, q) == pytest.approx(percentile(direct, q), rel=0.06)


def test_min_equal_max_is_one_point() -> None:
    counts = np.zeros((1, 15))
    counts[0, 6] = 40  # (100, 250] ms
    lower, upper = explicit_buckets(DEFAULT_BOUNDS_MS[None, :], np.array([200.0]), np.array([200.0]))
    hist = rebin(lower, upper, counts)[0]
    assert hist[bin_index(np.array([200.0]))[0]] == pytest.approx(40)


def test_open_ends_without_min_and_max() -> None:
    lower, upper = explicit_buckets(np.array([[0.0, 5.0, 10.0]]), NAN, NAN)
    # (-inf, 0] is "0 ms"; (0, 5] starts at half its bound; (10, inf) ends at twice its lower bound.
    np.testing.assert_allclose(lower[0], [0.0, 2.5, 5.0, 10.0])
    np.testing.assert_allclose(upper[0], [0.0, 5.0, 10.0, 20.0])


def test_min_and_max_close_and_sharpen_the_buckets() -> None:
    lower, upper = explicit_buckets(np.array([[5.0, 10.0, 25.0]]), np.array([7.0]), np.array([30.0]))
    np.testing.assert_allclose(lower[0], [7.0, 7.0, 10.0, 25.0])
    np.testing.assert_allclose(upper[0], [7.0, 10.0, 25.0, 30.0])


def test_exponential_bucket_edges() -> None:
    lower, upper = exponential_buckets(0, 0, 3, 1.0)
    np.testing.assert_allclose(lower, [1, 2, 4])
    np.testing.assert_allclose(upper, [2, 4, 8])
    lower, _ = exponential_buckets(1, -2, 2, 1000.0)
    np.testing.assert_allclose(lower, [500.0, 1000.0 * 2**-0.5])


def test_absurd_edges_stay_finite() -> None:
    lower, upper = exponential_buckets(-10, 2**20, 4, 1000.0)  # far past any float
    hist = rebin(lower[None, :], upper[None, :], np.ones((1, 4)))
    assert np.isfinite(hist).all() and hist.sum() == pytest.approx(4)
    assert hist[0, -1] == pytest.approx(4)  # all in the open-ended last bin


def test_large_inputs_are_processed_in_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 50, (30, 15)).astype(float)
    lower, upper = explicit_buckets(np.tile(DEFAULT_BOUNDS_MS, (30, 1)), np.full(30, np.nan), np.full(30, np.nan))
    whole = rebin(lower, upper, counts)
    monkeypatch.setattr(rebin_module, "_CELLS_PER_PASS", 1000)  # 1 row per pass
    np.testing.assert_allclose(rebin(lower, upper, counts), whole)
