"""The capture budget: busy subjects keep about PER_SECOND captures a second per class,
chosen by trace hash (never by arrival order), each standing for the requests it replaces."""
from __future__ import annotations

import numpy as np

from otel_ai.decode.capture_budget import ERROR, PER_SECOND, SAMPLED, TICK_NS, CaptureBudget

NS = 1_000_000_000
T0 = 1_771_164_000 * NS


def _pass(budget: CaptureBudget, subject: int, klass: int, n: int, second: int, rng) -> tuple[np.ndarray, np.ndarray]:
    sid = np.full(n, subject, dtype=np.int32)
    kls = np.full(n, klass)
    trace_key = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    return budget.thin(sid, kls, np.ones(n, dtype=bool), trace_key, [(T0 + second * NS) // TICK_NS], [n])


def test_a_quiet_subject_keeps_every_capture():
    budget, rng = CaptureBudget(seed=1), np.random.default_rng(1)
    for second in range(20):
        kept, fraction = _pass(budget, 0, ERROR, 5, second, rng)
        assert kept.all() and (fraction == 1.0).all()


def test_a_busy_subject_is_thinned_to_the_budget_and_weighs_what_it_drops():
    budget, rng = CaptureBudget(seed=2), np.random.default_rng(2)
    kept_per_second, weighed = [], []
    for second in range(30):
        kept, fraction = _pass(budget, 3, ERROR, 2000, second, rng)
        kept_per_second.append(int(kept.sum()))
        weighed.append(float((1.0 / fraction[kept]).sum()))
    assert kept_per_second[0] == 2000  # the first second: nothing known yet, everything kept
    steady = kept_per_second[2:]
    assert 0.5 * PER_SECOND <= np.mean(steady) <= 1.5 * PER_SECOND, steady
    # each kept capture stands for 1/fraction requests: the weighed total is the traffic
    assert abs(np.mean(weighed[2:]) - 2000) / 2000 < 0.2, weighed


def test_classes_and_subjects_have_budgets_of_their_own():
    budget, rng = CaptureBudget(seed=3), np.random.default_rng(3)
    for second in range(5):
        _pass(budget, 0, ERROR, 4000, second, rng)
        quiet, _ = _pass(budget, 1, ERROR, 4, second, rng)
        sampled, _ = _pass(budget, 0, SAMPLED, 4, second, rng)
    assert quiet.all() and sampled.all()  # a busy route's errors thin neither another route nor its own sample


def test_a_late_exporting_pod_is_kept_in_proportion_to_its_requests():
    """The canary (5 % of requests, all failing) exports after the other pods in every
    second: a first-come cap would never see it; the hash keeps it at its share."""
    budget, rng = CaptureBudget(seed=4), np.random.default_rng(4)
    canary = others = 0
    for second in range(120):
        for pod_share, is_canary in ((0.95, False), (0.05, True)):  # the canary's batch comes last
            n = int(4000 * pod_share) if not is_canary else 200
            kept, _ = _pass(budget, 0, ERROR, n, second, rng)
            if second >= 2:
                canary += int(kept.sum()) if is_canary else 0
                others += 0 if is_canary else int(kept.sum())
    share = canary / (canary + others)
    assert 0.03 <= share <= 0.08, (canary, others)


def test_the_same_traces_are_kept_whatever_the_order_they_come_in():
    rng = np.random.default_rng(5)
    n = 3000
    keys = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)

    def kept_keys(order: np.ndarray) -> set[int]:
        budget = CaptureBudget(seed=9)
        warm = np.zeros(4000, dtype=np.int32)  # one busy second before, to set the fraction
        budget.thin(warm, np.zeros(4000, dtype=np.int64), np.ones(4000, dtype=bool),
                    np.arange(4000, dtype=np.uint64), [T0 // TICK_NS], [4000])
        kept, _ = budget.thin(np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool),
                              keys[order], [(T0 + NS) // TICK_NS], [n])
        return set(keys[order][kept].tolist())

    forward = kept_keys(np.arange(n))
    assert 0 < len(forward) < n
    assert forward == kept_keys(np.arange(n)[::-1])


def test_a_gap_in_event_time_starts_the_count_again():
    budget, rng = CaptureBudget(seed=6), np.random.default_rng(6)
    for second in range(3):
        _pass(budget, 0, ERROR, 3000, second, rng)
    kept, _ = _pass(budget, 0, ERROR, 3000, 3, rng)
    assert kept.sum() < 100
    # an hour later the old rate no longer holds for what was counted, but the fractions stay
    # until a tick of the new traffic is counted
    _pass(budget, 0, ERROR, 3, 3600, rng)
    kept, _ = _pass(budget, 0, ERROR, 3, 3601, rng)
    assert kept.all()


def test_one_pass_over_many_requests_keeps_what_a_pass_over_each_keeps():
    rng = np.random.default_rng(7)
    sizes = [int(s) for s in rng.integers(50, 400, 40)]
    n = sum(sizes)
    sid = rng.integers(0, 3, n).astype(np.int32)
    klass = rng.integers(0, 3, n)
    candidate = rng.random(n) < 0.6
    keys = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    seconds = [(T0 + r * NS // 4) // TICK_NS for r in range(len(sizes))]  # four requests a second
    together, together_fraction = CaptureBudget().thin(sid, klass, candidate, keys, seconds, sizes)
    budget, alone, alone_fraction, start = CaptureBudget(), [], [], 0
    for size in sizes:
        part = slice(start, start + size)
        kept, fraction = budget.thin(sid[part], klass[part], candidate[part], keys[part], [seconds[len(alone)]], [size])
        alone.append(kept)
        alone_fraction.append(fraction)
        start += size
    assert together.sum() < candidate.sum()  # the budget did thin
    assert np.array_equal(together, np.concatenate(alone))
    assert np.array_equal(together_fraction, np.concatenate(alone_fraction))


def test_requests_without_rows_leave_the_count_alone():
    budget, rng = CaptureBudget(seed=8), np.random.default_rng(8)
    empty = np.zeros(0, dtype=np.int32)
    for second in range(4):  # an empty request (its median reads 0) after every busy one
        kept, _ = _pass(budget, 0, ERROR, 3000, second, rng)
        budget.thin(empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.uint64),
                    [0], [0])
    assert kept.sum() < 100  # thinned all the same: second 0 was never taken for a gap in time


def test_a_busy_subject_is_thinned_within_its_first_second():
    """Only the first tick keeps everything: a subject at 20,000 errors a second (a restart
    under load, a new route) builds about a tenth of a second of captures, not a second."""
    budget, rng = CaptureBudget(seed=10), np.random.default_rng(10)
    per_tick = 2_000
    kept = [int(_pass_at(budget, tick, per_tick, rng).sum()) for tick in range(10)]
    assert kept[0] == per_tick
    assert sum(kept[1:]) <= 3 * PER_SECOND  # the rest of the second: about PER_SECOND


def _pass_at(budget: CaptureBudget, tick: int, n: int, rng) -> np.ndarray:
    trace_key = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    kept, _ = budget.thin(np.zeros(n, dtype=np.int32), np.full(n, ERROR), np.ones(n, dtype=bool), trace_key,
                          [T0 // TICK_NS + tick], [n])
    return kept
