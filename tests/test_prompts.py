"""The prompt library: every event type, evidence in the fence, models, tokens and cost."""
from __future__ import annotations

import json
import typing

import pytest
from anthropic._data import DEPRECATED_MODELS
from anthropic.types.model_param import ModelParam

from otel_ai.analysis.prompts import (
    FENCE_CLOSE,
    FENCE_OPEN,
    SYSTEM_PROMPT,
    TYPE_GUIDES,
    PromptLibrary,
)
from otel_ai.config import ConfigError, load_settings
from otel_ai.model import EVENT_TYPES
from otel_ai.testing.factory import IncidentFactory

SETTINGS = load_settings(env={})
LIBRARY = PromptLibrary(SETTINGS.analysis)


def fenced_json(prompt) -> dict:
    text = prompt.messages[0]["content"]
    return json.loads(text[text.index(FENCE_OPEN) + len(FENCE_OPEN):text.index(FENCE_CLOSE)])


def test_every_event_type_has_a_guide_in_the_cached_system_prompt():
    assert set(TYPE_GUIDES) == set(EVENT_TYPES)
    for name in EVENT_TYPES:
        assert f"- {name}: " in SYSTEM_PROMPT


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_build_prompt_for_every_type(event_type):
    incident = IncidentFactory.create_sample(event_type)
    prompt = LIBRARY.build_prompt(incident)
    evidence = fenced_json(prompt)
    assert evidence["incident"]["type"] == event_type
    assert evidence["metric"]["metric"] == incident.data["metric"]
    assert prompt.messages[0]["content"].startswith(f"Incident type: {event_type} ")
    assert TYPE_GUIDES[event_type].focus in prompt.messages[0]["content"]
    # The system prompt is byte-identical for every incident, so the prompt cache applies.
    assert prompt.system == [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
    assert prompt.max_tokens == min(SETTINGS.analysis.max_tokens, TYPE_GUIDES[event_type].max_tokens)
    assert prompt.worst_case_usd >= prompt.typical_usd > 0


def test_evidence_carries_suspects_versions_errors_exemplars_and_samples():
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
    related = [{"type": "CIRCUIT_BREAKER_CANDIDATE", "subject_kind": "dependency", "service": "payments-api",
                "route": "payments-api", "summary": "62% of calls failing"}]
    evidence = fenced_json(LIBRARY.build_prompt(incident, related))
    top = incident.suspects[0]
    assert evidence["suspects"][0] == {"attribute": top["key"], "value": top["value"],
                                       "pct_of_bad_requests": round(top["bad_share"] * 100, 1),
                                       "pct_of_good_requests": round(top["good_share"] * 100, 1)}
    assert evidence["versions_first_seen_before_onset"] == incident.context["new_versions"]
    assert evidence["top_errors"][0]["message"] == incident.context["top_errors"][0]["message"]
    assert evidence["exemplar_trace_ids"] == incident.context["exemplar_trace_ids"][:5]
    assert evidence["metric"]["threshold"] == incident.data["threshold"]
    assert evidence["metric"]["baseline_value"] == incident.data["baseline_value"]
    assert evidence["metric"]["breach_ratio"] == incident.data["breach_ratio"]
    assert evidence["metric"]["trend"] == incident.data["trend"]
    assert len(evidence["recent_samples"]) == len(incident.context["recent_samples"])
    assert evidence["related_open_incidents"][0]["service"] == "payments-api"


def test_models_follow_severity_and_are_current_sdk_models():
    current = set(typing.get_args(typing.get_args(ModelParam)[0]))
    for severity in ("critical", "warning", "info"):
        model = getattr(SETTINGS.analysis.models, severity)
        assert model in current, f"{model} is not a model the installed SDK knows"
        assert model not in DEPRECATED_MODELS, f"{model} is deprecated ({DEPRECATED_MODELS.get(model)})"
    assert LIBRARY.recommended_model(IncidentFactory.create("ERROR_RATE_SPIKE", severity="critical")) == \
        SETTINGS.analysis.models.critical
    assert LIBRARY.recommended_model(IncidentFactory.create("LATENCY_ANOMALY", severity="warning")) == \
        SETTINGS.analysis.models.warning
    # The stronger model for critical incidents costs more per token than the warning one.
    prices = SETTINGS.analysis.prices
    assert prices[SETTINGS.analysis.models.critical].output > prices[SETTINGS.analysis.models.warning].output


def test_a_model_without_a_price_is_a_config_error():
    with pytest.raises(ConfigError, match=r"analysis: models\.critical: no price for 'claude-opus-5-5'"):
        load_settings(env={"AI_MODEL_CRITICAL": "claude-opus-5-5"})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_typical_cost_of_each_type_is_under_two_cents(event_type):
    assert LIBRARY.build_prompt(IncidentFactory.create_sample(event_type)).typical_usd <= 0.02


def test_estimate_cost_is_the_worst_case_of_the_built_prompt():
    incident = IncidentFactory.create_sample("LATENCY_ANOMALY")
    assert LIBRARY.estimate_cost(incident) == LIBRARY.build_prompt(incident).worst_case_usd


def test_oversized_evidence_is_trimmed_to_the_prompt_limit():
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")
    incident.context["top_errors"] = [{"type": f"E{n}", "message": "x" * 250, "count": n} for n in range(5)]
    related = [{"type": "LATENCY_ANOMALY", "summary": "y" * 250, "service": f"s{n}"} for n in range(5)]
    library = PromptLibrary(SETTINGS.analysis.model_copy(update={"max_prompt_chars": 2000}))
    content = library.build_prompt(incident, related).messages[0]["content"]
    fence = content[content.index(FENCE_OPEN):content.index(FENCE_CLOSE) + len(FENCE_CLOSE)]
    assert len(fence) <= 2000
    assert content.count(FENCE_CLOSE) == 1
