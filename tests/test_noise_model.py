"""The noise model: each subject's burstiness, learnt by the baselines (Baselines.dispersion),
and the one rate test that uses it (rate_surprise), on the detector bench (SlotFeeder), then
through the real pipeline on six hours of the deep topology's bursty benign traffic."""
from __future__ import annotations

import time

import numpy as np
import pytest

from otel_ai.baseline import MAX_RHO, Baselines
from otel_ai.config import load_settings
from otel_ai.detectors import BUILT_IN
from otel_ai.detectors.base import MEDIUM_SLOTS, SHORT_SLOTS, neg_log_binomial_tail
from otel_ai.histogram import BINS, bin_index
from otel_ai.model import ROUTE, Subject
from otel_ai.testing.harness import run_generator
from otel_ai.testing.scenarios import deep_scenario
from otel_ai.testing.slots import SlotFeeder

SLOT_S = 10.0
BUSY, CLEAN = Subject(ROUTE, "stations", "GET", "/stations"), Subject(ROUTE, "shop", "GET", "/clean")
BURST_EVERY, BURST_SLOTS = 36, 6  # a one-minute burst every six minutes


def bursty_errors(rng: np.random.Generator, slots: int, requests: int, level=(0.1, 0.3)) -> np.ndarray:
    """Errors per slot of a route that fails `level` in one-minute bursts, ~0 otherwise."""
    share = np.full(slots, 0.002)
    for start in range(rng.integers(0, BURST_EVERY), slots, BURST_EVERY):
        share[start:start + BURST_SLOTS] = rng.uniform(*level)
    return rng.binomial(requests, share).astype(np.float64)


def learn(baselines: Baselines, errors: np.ndarray, requests: float, spread_frozen=(False, False)) -> None:
    """Slot by slot, two subjects: row 0 with `errors`, row 1 steady with the same share on average."""
    rng = np.random.default_rng(5)
    hist = np.zeros((2, BINS))
    hist[:, bin_index(np.array([20.0]))[0]] = requests
    steady = rng.binomial(int(requests), max(errors.mean() / requests, 1e-3), size=errors.shape[0])
    for bad, calm in zip(errors, steady):
        baselines.learn({"requests": np.full(2, float(requests)), "errors": np.array([bad, calm], dtype=np.float64)},
                        hist, np.zeros(2, dtype=bool), np.array(spread_frozen))


@pytest.fixture(scope="module")
def learnt() -> Baselines:
    baselines = Baselines(SLOT_S, ["errors"])
    learn(baselines, bursty_errors(np.random.default_rng(1), 720, 50), 50)  # two hours
    return baselines


def test_a_steady_route_has_no_burstiness_and_a_bursty_one_has_it(learnt):
    ids = np.array([0, 1])
    for slots in (SHORT_SLOTS, MEDIUM_SLOTS, 30):
        rho, units, peak = learnt.dispersion("errors", ids, slots)
        assert rho[1] == 0.0  # binomial noise alone never counts as burstiness
        assert 0.02 < rho[0] <= MAX_RHO
        assert units[0] == slots / (1 if slots < MEDIUM_SLOTS else MEDIUM_SLOTS)
    # The highest burst surely shown (two standard errors below the window's share).
    assert 0.15 <= peak[0] <= 0.3
    assert peak[1] < 0.06  # about its usual share of 3 %


def test_the_learnt_correlation_matches_a_beta_binomial_with_a_known_one():
    # Shares drawn from Beta(a, b) with a + b = 1/rho - 1: a known intra-window correlation.
    rng, rho_true, p = np.random.default_rng(3), 0.05, 0.1
    a, b = p * (1 / rho_true - 1), (1 - p) * (1 / rho_true - 1)
    errors = rng.binomial(50, rng.beta(a, b, size=2000)).astype(np.float64)
    baselines = Baselines(SLOT_S, ["errors"])
    learn(baselines, errors, 50)
    rho, _, _ = baselines.dispersion("errors", np.array([0, 1]), SHORT_SLOTS)
    # The excess of 3 sd of chance is subtracted, so the estimate errs low, never high.
    assert 0.6 * rho_true < rho[0] <= 1.2 * rho_true
    assert rho[1] == 0.0


def test_an_outage_teaches_no_burstiness():
    errors = np.concatenate((np.zeros(100), np.full(200, 50.0)))  # 100 % failing for half an hour
    baselines = Baselines(SLOT_S, ["errors"])
    learn(baselines, errors, 50, spread_frozen=(True, False))
    rho, _, peak = baselines.dispersion("errors", np.array([0]), MEDIUM_SLOTS)
    assert rho[0] == 0.0 and peak[0] == 0.0


def test_unlearnt_counters_and_unknown_subjects_are_judged_as_steady(learnt):
    rho, _, peak = learnt.dispersion("retries", np.array([0]), SHORT_SLOTS)
    assert rho[0] == 0.0 and peak[0] == 0.0
    rho, _, peak = learnt.dispersion("errors", np.array([500]), SHORT_SLOTS)  # grows on demand
    assert rho[0] == 0.0 and peak[0] == 0.0


def test_fewer_independent_trials_make_the_same_share_less_surprising():
    bad, n, p0 = np.array([30.0]), np.array([100.0]), np.array([0.02])
    plain = neg_log_binomial_tail(bad, n, p0)
    assert neg_log_binomial_tail(bad, n, p0, n / 10.0) == pytest.approx(plain / 10.0)
    assert neg_log_binomial_tail(np.array([1.0]), n, p0, n / 10.0) == 0.0  # below p0: no surprise


# --------------------------------------------------------------------------- the detector on it

@pytest.fixture(scope="module")
def bursty_feeder() -> SlotFeeder:
    """Two hours of a route failing 10-30 % in one-minute bursts, and a clean route."""
    rng = np.random.default_rng(2)
    feeder = SlotFeeder(BUILT_IN["ERROR_RATE_SPIKE"](load_settings(env={}).events["ERROR_RATE_SPIKE"]), [BUSY, CLEAN])
    busy, clean = bursty_errors(rng, 720, 50), rng.binomial(100, 0.002, size=720)
    feeder.learning_alarms = []
    for bad, calm in zip(busy, clean):
        feeder.learning_alarms += feeder.slot({BUSY: {"requests": 50, "errors": bad}, CLEAN: {"requests": 100, "errors": calm}})
    return feeder


def run(feeder: SlotFeeder, busy_share: float, clean_share: float, slots: int = BURST_SLOTS) -> set[Subject]:
    found = []
    for _ in range(slots):
        found += feeder.slot({BUSY: {"requests": 50, "errors": round(50 * busy_share)},
                              CLEAN: {"requests": 100, "errors": round(100 * clean_share)}})
    for _ in range(BURST_EVERY):  # calm again, so each check starts from the route's usual state
        feeder.slot({BUSY: {"requests": 50, "errors": 0}, CLEAN: {"requests": 100, "errors": 0}})
    return {a.subject for a in found}


def test_the_first_bursts_page_and_later_ones_of_the_usual_size_do_not(bursty_feeder):
    alarms_at = sorted({a.event_time_ns for a in bursty_feeder.learning_alarms})
    assert alarms_at, "the first burst is news: nothing was known about the route"
    assert len(alarms_at) < 12  # of 20 bursts; the learnt ones are quiet
    assert run(bursty_feeder, 0.3, 0.0) == set()


def test_a_bursty_route_still_pages_at_80_percent(bursty_feeder):
    assert run(bursty_feeder, 0.8, 0.0, slots=3) == {BUSY}


def test_a_clean_route_going_from_02_to_5_percent_pages(bursty_feeder):
    assert run(bursty_feeder, 0.0, 0.05) == {CLEAN}


# --------------------------------------------------------------------------- through the pipeline

def test_six_hours_of_bursty_benign_traffic_raise_nothing_once_the_bursts_are_known():
    # The deep topology: routes failing 10-30 % (and a search slowing 2-4x) in bursts, the
    # daily swing, 4xx bursts on the gateway, traffic surges. At 5 % of its rate and one
    # export per 10 s, seven hours are ~1.7 M spans. The first hour learns each route's
    # bursts: its first ones page, as nothing says yet that the route bursts. The six
    # hours after it must raise nothing.
    started = time.monotonic()
    generator = deep_scenario("deep_benign", seed=3, rate_scale=0.05, duration_s=7 * 3600)
    result = run_generator(generator, 7 * 3600, interval_s=10.0)
    learnt_ns = generator.start_ns + 3600 * 1_000_000_000
    learning = [i.summary for i in result.incidents if i.opened_at_ns < learnt_ns]
    print(f"7 h deep benign: {result.spans} spans, {time.monotonic() - started:.0f} s wall; "
          f"{len(learning)} incidents in the first hour, {len(result.incidents) - len(learning)} after")
    assert result.spans > 1_500_000
    assert [i.summary for i in result.incidents if i.opened_at_ns >= learnt_ns] == []
