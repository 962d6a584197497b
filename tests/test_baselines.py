"""Baselines: what normal looks like per subject, learnt slot by slot."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.baseline import PRIOR_RATE, WARM_SLOTS, Baselines
from otel_ai.histogram import BINS, bin_index

SLOT_S = 10.0


def learn(baselines: Baselines, slots: int, frozen=(False, False), **per_subject) -> None:
    """`slots` identical slots for two subjects; per_subject: counter -> (subject 0, subject 1)."""
    hist = np.zeros((2, BINS))
    hist[:, bin_index(np.array([20.0]))[0]] = per_subject["requests"]
    for _ in range(slots):
        baselines.learn({k: np.array(v, dtype=np.float64) for k, v in per_subject.items()}, hist,
                        np.array(frozen))


def test_a_young_baseline_is_the_prior_and_learns_the_usual_share():
    baselines = Baselines(SLOT_S, ["errors"])
    assert baselines.rate("errors", 2).tolist() == [PRIOR_RATE, PRIOR_RATE]
    learn(baselines, 200, requests=(100, 100), errors=(10, 0))
    assert baselines.rate("errors", 2)[0] == pytest.approx(0.10, abs=0.002)
    assert baselines.rate("errors", 2)[1] < 0.001


def test_frozen_subjects_learn_nothing():
    baselines = Baselines(SLOT_S, ["errors"])
    learn(baselines, 100, requests=(100, 100), errors=(0, 0))
    before = baselines.rate("errors", 2).copy()
    learn(baselines, 30, frozen=(True, False), requests=(100, 100), errors=(90, 90))
    assert baselines.rate("errors", 2)[0] == before[0]  # an open incident's data is not the new normal
    assert baselines.rate("errors", 2)[1] > 0.2


def test_warm_needs_both_enough_requests_and_enough_slots():
    baselines = Baselines(SLOT_S)
    learn(baselines, WARM_SLOTS - 1, requests=(1000, 1))
    assert baselines.warm(2).tolist() == [False, False]  # too few slots
    learn(baselines, 1, requests=(1000, 1))
    assert baselines.warm(2).tolist() == [True, False]  # the second: too few requests


def test_usual_rate_and_latency_count_from_the_first_traffic():
    baselines = Baselines(SLOT_S, ["busy_ms"])
    learn(baselines, 20, requests=(0, 50), busy_ms=(0, 1000))  # subject 0 has no traffic yet
    learn(baselines, 40, requests=(100, 50), busy_ms=(2500, 1000))
    assert baselines.per_second("requests", 2).tolist() == pytest.approx([10.0, 5.0])
    assert baselines.mean_per_request("busy_ms", 2).tolist() == pytest.approx([25.0, 20.0])
    assert baselines.latency_percentile(np.array([0]), 0.5)[0] == pytest.approx(20.0, rel=0.2)


def test_the_highest_sustained_concurrency_outlasts_the_load_and_ignores_a_blip():
    baselines = Baselines(SLOT_S, ["busy_ms"])
    # 2 requests in flight (20 s of busy time per 10 s slot), then 8 for ten minutes, then 2 again.
    learn(baselines, 60, requests=(100, 100), busy_ms=(20_000, 20_000))
    learn(baselines, 60, requests=(100, 100), busy_ms=(80_000, 20_000))
    learn(baselines, 60, requests=(100, 100), busy_ms=(20_000, 20_000))
    peak = baselines.peak_concurrency(2)
    assert peak[0] == pytest.approx(8.0, rel=0.01) and peak[1] == pytest.approx(2.0, rel=0.01)
    learn(baselines, 1, requests=(100, 100), busy_ms=(20_000, 400_000))  # one slot of 40: not sustained
    assert baselines.peak_concurrency(2)[1] < 10.0
