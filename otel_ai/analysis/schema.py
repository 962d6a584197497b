"""The one answer shape every analysis has, whether Claude or the offline analyzer wrote it.

Field names follow the seed's Slack formatter (root_causes[].cause/probability, actions,
rollback_needed, rollback_reasoning, user_impact, confidence). Probabilities and
confidence are percentages (0-100), because the seed prints `${probability}%`.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROMPT_VERSION = "v1"
VERDICTS = ("supported", "contradicted", "insufficient_evidence")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RootCause(_Closed):
    cause: str = Field(description="One concrete cause, naming the component, version, pod, tenant or dependency.")
    probability: float = Field(ge=0, le=100, description="Percent, 0-100.")
    evidence: list[str] = Field(description="Facts from the evidence block that support this cause.")


class Hypothesis(_Closed):
    hypothesis: str
    verdict: Literal["supported", "contradicted", "insufficient_evidence"]
    evidence: list[str] = Field(description="The facts from the evidence block this verdict rests on.")


class AnalysisAnswer(_Closed):
    summary: str = Field(description="One or two sentences an on-call engineer reads first.")
    enough_evidence: bool = Field(description="False when the evidence cannot single out a cause.")
    hypotheses: list[Hypothesis]
    root_causes: list[RootCause] = Field(description="Most likely first; may be empty without enough evidence.")
    actions: list[str] = Field(description="Concrete next steps, most urgent first.")
    rollback_needed: bool
    rollback_reasoning: str
    user_impact: str
    confidence: float = Field(ge=0, le=100, description="Percent, 0-100: confidence in the top root cause.")


@functools.cache
def answer_json_schema() -> dict[str, Any]:
    """What is sent as output_config.format: the SDK's transform keeps only the JSON-schema
    subset structured outputs accept; the full constraints are re-checked by pydantic.
    Imported lazily: the anthropic package costs ~40 MiB of RSS, needless without a key."""
    from anthropic import transform_schema

    return transform_schema(AnalysisAnswer)


class InvalidAnswer(ValueError):
    """The model's text is not a schema-valid AnalysisAnswer; the message says why."""


def parse_answer(text: str) -> AnalysisAnswer:
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidAnswer(f"not JSON: {exc}") from None
    try:
        return AnalysisAnswer.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise InvalidAnswer(problems) from None
