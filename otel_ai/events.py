"""Events that later stages send back into the incident stage.

The incident stage owns every incident change: a later stage never changes an incident
itself. It posts one of these to the incident stage's inbox (Pipeline.submit), and the
pipeline worker applies it in arrival order, as one more versioned change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AnalysisDone:
    """The analysis stage finished an incident's analysis (Claude or offline)."""

    incident_id: str
    analysis: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BudgetExhausted:
    """The first analysis of a UTC day that the budget could not pay for."""

    spent_usd: float
    limit_usd: float
    resets_at_ns: int
    detail: str = ""


IncidentEvent = AnalysisDone | BudgetExhausted
