"""The seed's budget block: per-day USD, per-hour analyses, concurrency, restart, pricing."""
from __future__ import annotations

import threading

import pytest

from otel_ai.analysis.budget import (
    BUDGET_EXHAUSTED,
    DAY_NS,
    HOUR_NS,
    HOURLY_LIMIT,
    Budget,
    Refusal,
    Reservation,
)
from otel_ai.analysis.pricing import Usage, actual_cost, worst_case_cost
from otel_ai.config import Budget as BudgetRules
from otel_ai.config import Price
from otel_ai.store import IncidentStore

DAY0 = 20_000 * DAY_NS  # midnight UTC
SONNET = Price(input=2.0, output=10.0, cacheWrite=2.5, cacheRead=0.2)


class Clock:
    def __init__(self, ns: int = DAY0 + 3600 * 10**9) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def rules(max_cost: float = 1.0, per_hour: int = 1000) -> BudgetRules:
    return BudgetRules(maxCostPerDay=max_cost, maxAnalysesPerHour=per_hour, alertOnBudgetExceeded=True)


def test_actual_cost_adds_the_four_token_kinds():
    usage = Usage(input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=4000)
    # 1000*2 + 500*10 + 2000*2.5 + 4000*0.2 = 2000 + 5000 + 5000 + 800 = 12800 per 1e6
    assert actual_cost(SONNET, usage) == pytest.approx(0.0128)


def test_worst_case_covers_every_byte_as_a_cache_write_token_and_all_output():
    worst = worst_case_cost(SONNET, prompt_bytes=10_000, max_tokens=1000)
    assert worst >= actual_cost(SONNET, Usage(cache_write_tokens=10_000, output_tokens=1000))


def test_reserve_refuses_past_the_daily_limit_and_alerts_once():
    budget = Budget(rules(max_cost=0.01), clock_ns=Clock())
    first = budget.reserve(0.006)
    assert isinstance(first, Reservation)
    second = budget.reserve(0.006)  # 0.012 > 0.01 while the first is outstanding
    assert isinstance(second, Refusal) and second.reason == BUDGET_EXHAUSTED and second.first_today
    budget.settle(first, 0.003)
    third = budget.reserve(0.006)  # 0.003 + 0.006 fits
    assert isinstance(third, Reservation)
    budget.settle(third, 0.006)
    again = budget.reserve(0.006)
    assert isinstance(again, Refusal) and not again.first_today
    assert budget.spent_today() == pytest.approx(0.009)


def test_release_returns_the_reservation():
    budget = Budget(rules(max_cost=0.01), clock_ns=Clock())
    r = budget.reserve(0.009)
    budget.release(r)
    budget.release(r)  # idempotent: a double release must not grant extra budget
    assert isinstance(budget.reserve(0.009), Reservation)
    assert isinstance(budget.reserve(0.002), Refusal)


def test_hourly_limit_counts_analyses_not_repairs():
    clock = Clock()
    budget = Budget(rules(per_hour=2), clock_ns=clock)
    assert isinstance(budget.reserve(0.0, new_analysis=True), Reservation)
    assert isinstance(budget.reserve(0.0, new_analysis=True), Reservation)
    assert isinstance(budget.reserve(0.0, new_analysis=False), Reservation)
    refused = budget.reserve(0.0, new_analysis=True)
    assert isinstance(refused, Refusal) and refused.reason == HOURLY_LIMIT
    clock.ns += HOUR_NS
    assert isinstance(budget.reserve(0.0), Reservation)


def test_new_utc_day_resets_spend_and_alert():
    clock = Clock()
    budget = Budget(rules(max_cost=0.01), clock_ns=clock)
    budget.settle(budget.reserve(0.01), 0.01)
    assert isinstance(budget.reserve(0.001), Refusal)
    clock.ns += DAY_NS
    assert budget.spent_today() == 0.0
    assert isinstance(budget.reserve(0.001), Reservation)
    budget.settle(budget.reserve(0.009), 0.009)
    refusal = budget.reserve(0.005)
    assert isinstance(refusal, Refusal) and refusal.first_today


def test_concurrent_reservations_never_overspend():
    budget = Budget(rules(max_cost=0.05), clock_ns=Clock())
    granted: list[Reservation] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            r = budget.reserve(0.001)
            if isinstance(r, Reservation):
                with lock:
                    granted.append(r)
                budget.settle(r, 0.001)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50
    assert budget.spent_today() == pytest.approx(0.05)


def test_restart_resumes_todays_spend_from_the_store(tmp_path):
    clock = Clock()
    store = IncidentStore(tmp_path / "incidents.db")
    budget = Budget(rules(max_cost=0.01), store, clock_ns=clock)
    budget.settle(budget.reserve(0.008), 0.008, "inc_1", "claude-haiku-5-5", Usage(input_tokens=10, output_tokens=5))
    store.close()
    reopened = IncidentStore(tmp_path / "incidents.db")
    again = Budget(rules(max_cost=0.01), reopened, clock_ns=clock)
    assert again.spent_today() == pytest.approx(0.008)
    assert isinstance(again.reserve(0.003), Refusal)
    assert reopened.ai_spend_since(DAY0) == (pytest.approx(0.008), 1)
    reopened.close()
