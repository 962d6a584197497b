"""The seed's `budget:` block, enforced: USD per UTC day and analyses per hour.

Before each call the caller reserves the call's worst-case cost; the reservation is
refused if today's spend plus every outstanding reservation would pass maxCostPerDay.
After the call the reservation is settled with the actual cost (or released if the
call cost nothing). One lock covers the check and the reservation, so concurrent
analyses can never jointly overspend. Spend is also written to the store, so a
restart resumes today's total instead of granting a fresh budget.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from otel_ai.analysis.pricing import Usage
from otel_ai.config import Budget as BudgetRules
from otel_ai.timefmt import NS_PER_S

# Money is counted in integer nano-dollars so that many small calls add up exactly and
# "never above the limit" holds without float rounding.
NANO_USD = 1_000_000_000
DAY_NS = 86_400 * NS_PER_S
HOUR_NS = 3_600 * NS_PER_S

BUDGET_EXHAUSTED = "budget_exhausted"
HOURLY_LIMIT = "hourly_limit"


class Ledger(Protocol):
    def record_ai_call(self, at_ns: int, incident_id: str, model: str, input_tokens: int, output_tokens: int,
                       cache_write_tokens: int, cache_read_tokens: int, cost_usd: float) -> None: ...

    def ai_spend_since(self, since_ns: int) -> tuple[float, int]: ...


def _nano(usd: float) -> int:
    return round(usd * NANO_USD)


@dataclass(slots=True)
class Reservation:
    amount_nano: int
    day_start_ns: int
    open: bool = True


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # BUDGET_EXHAUSTED or HOURLY_LIMIT
    detail: str
    first_today: bool  # the first budget refusal of this UTC day: raise COST_ALERT now


class Budget:
    def __init__(self, rules: BudgetRules, ledger: Ledger | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.rules = rules
        self.ledger = ledger
        self.clock_ns = clock_ns
        self._lock = threading.Lock()
        self._day_start_ns = -1
        self._spent = 0  # nano-USD
        self._reserved = 0
        self._alerted_today = False
        # Start times of analyses in the last hour; never longer than the hourly limit.
        self._recent: deque[int] = deque(maxlen=max(1, rules.max_analyses_per_hour))

    def _roll_day(self, now_ns: int) -> None:
        day_start = now_ns - now_ns % DAY_NS
        if day_start == self._day_start_ns:
            return
        self._day_start_ns = day_start
        self._spent = _nano(self.ledger.ai_spend_since(day_start)[0]) if self.ledger is not None else 0
        self._alerted_today = False

    def reserve(self, amount_usd: float, new_analysis: bool = True) -> Reservation | Refusal:
        """Reserve amount_usd for one call; new_analysis counts it against the hourly limit
        (a repair call of the same analysis does not)."""
        now = self.clock_ns()
        amount = _nano(amount_usd)
        with self._lock:
            self._roll_day(now)
            if new_analysis:
                while self._recent and now - self._recent[0] >= HOUR_NS:
                    self._recent.popleft()
                if len(self._recent) >= self.rules.max_analyses_per_hour:
                    return Refusal(HOURLY_LIMIT, f"{self.rules.max_analyses_per_hour} analyses in the last hour",
                                   False)
            limit = self.rules.max_cost_per_day
            if self._spent + self._reserved + amount > _nano(limit):
                first = not self._alerted_today
                self._alerted_today = True
                return Refusal(BUDGET_EXHAUSTED,
                               f"spent ${self._spent / NANO_USD:.4f} of ${limit:.2f} today; this call could cost "
                               f"up to ${amount_usd:.4f}", first)
            self._reserved += amount
            if new_analysis:
                self._recent.append(now)
            return Reservation(amount, self._day_start_ns)

    def settle(self, reservation: Reservation, cost_usd: float, incident_id: str = "", model: str = "",
               usage: Usage | None = None) -> None:
        """Replace the reservation by the call's actual cost and record it."""
        now = self.clock_ns()
        with self._lock:
            self._close(reservation)
            self._roll_day(now)
            self._spent += _nano(cost_usd)
        if self.ledger is not None and cost_usd > 0:
            u = usage or Usage()
            self.ledger.record_ai_call(now, incident_id, model, u.input_tokens, u.output_tokens,
                                       u.cache_write_tokens, u.cache_read_tokens, cost_usd)

    def release(self, reservation: Reservation) -> None:
        """The call was not billed (refused, timed out before an answer)."""
        with self._lock:
            self._close(reservation)

    def _close(self, reservation: Reservation) -> None:
        if reservation.open:
            reservation.open = False
            if reservation.day_start_ns == self._day_start_ns:
                self._reserved = max(0, self._reserved - reservation.amount_nano)

    def spent_today(self) -> float:
        with self._lock:
            self._roll_day(self.clock_ns())
            return self._spent / NANO_USD

    def analyses_last_hour(self) -> int:
        now = self.clock_ns()
        with self._lock:
            return sum(1 for t in self._recent if now - t < HOUR_NS)

    def day_end_ns(self) -> int:
        with self._lock:
            self._roll_day(self.clock_ns())
            return self._day_start_ns + DAY_NS
