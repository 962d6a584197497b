"""Claude analysis of one incident, on the official anthropic SDK.

`analyze(incident, related)` is a blocking call that always returns an analysis in the
answer schema: Claude's, or the offline analyzer's when Claude cannot answer. Queueing,
threads and getting the result back to the incident belong to the analysis stage
(otel_ai/analysis/stage.py).

Retries are done here rather than by the SDK (max_retries=0) for one reason: the SDK
sleeps for whatever retry-after says, and an analysis has a deadline. Here a 429, 5xx,
529 or timeout is retried with backoff, honouring retry-after only while it fits in the
deadline; after that, and whenever there is no key, the budget is spent or the answer
stays invalid after one repair, the offline analyzer answers in the same schema.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from otel_ai.analysis.budget import BUDGET_EXHAUSTED, Budget, Refusal
from otel_ai.analysis.offline import analyze_offline
from otel_ai.analysis.pricing import Usage, actual_cost, worst_case_cost
from otel_ai.analysis.prompts import Prompt, PromptLibrary
from otel_ai.analysis.redact import redactor_from_settings
from otel_ai.analysis.schema import (
    PROMPT_VERSION,
    AnalysisAnswer,
    InvalidAnswer,
    answer_json_schema,
    parse_answer,
)
from otel_ai.config import Settings
from otel_ai.model import Incident
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.timefmt import rfc3339

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
MIN_ATTEMPT_S = 1.0  # no point starting a call with less time left than this
MAX_REPAIR_ECHO_CHARS = 4000
# Answers we never ask Claude for: otel-ai's own budget alert (Claude is what ran out).
OFFLINE_ONLY_TYPES = {"COST_ALERT": BUDGET_EXHAUSTED}
NO_USAGE = Usage()


class GiveUp(Exception):
    """The API could not give an answer within attempts and deadline; the message says why."""


def _retryable(exc: Exception) -> bool:
    import anthropic

    # The same statuses the SDK itself retries: timeouts, conflicts, 429 and every 5xx (529 included).
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _describe(exc: Exception) -> str:
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        kind = (body.get("error") or {}).get("type") if isinstance(body.get("error"), dict) else None
        return f"{exc.status_code} {kind or type(exc).__name__}"
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    return type(exc).__name__


def _retry_after_s(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


class ClaudeAnalyzer:
    def __init__(self, settings: Settings, budget: Budget, metrics: SelfMetrics | None = None,
                 api_key: str | None = None, base_url: str | None = None,
                 library: PromptLibrary | None = None) -> None:
        self.settings = settings
        self.rules = settings.analysis
        self.budget = budget
        self.metrics = metrics or SelfMetrics()
        self.library = library or PromptLibrary(self.rules, redactor_from_settings(self.rules.redaction))
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY", "")
        self.client = None
        if key:
            import anthropic  # only with a key: the SDK costs ~40 MiB of RSS

            # base_url None lets the SDK read ANTHROPIC_BASE_URL itself.
            self.client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0,
                                              timeout=self.rules.request_timeout)
        # Told about the first refusal of a UTC day for lack of budget (the stage raises COST_ALERT).
        self.on_budget_alert: Callable[[Refusal], Any] = lambda refusal: None
        self._stop = threading.Event()

    def close(self) -> None:
        """Give up any retry wait in progress and release the HTTP client."""
        self._stop.set()
        if self.client is not None:
            self.client.close()

    # ---- the analysis itself (any thread; also `otel-ai analyze`) ----
    def analyze(self, incident: Incident, related: list[dict] | None = None) -> dict[str, Any]:
        """`related`: other open incidents that may explain this one (analysis/related.py)."""
        related = related or []
        if incident.type in OFFLINE_ONLY_TYPES:
            return self.offline(incident, OFFLINE_ONLY_TYPES[incident.type], related)
        if self.client is None:
            return self.offline(incident, "no_api_key", related)
        prompt = self.library.build_prompt(incident, related)
        reservation = self.budget.reserve(prompt.worst_case_usd, new_analysis=True)
        if isinstance(reservation, Refusal):
            return self._refused(incident, reservation, related)
        started = time.monotonic()
        deadline = started + self.rules.deadline
        usage, cost, attempts, repaired = Usage(), 0.0, 0, False
        try:
            response, n = self._call(prompt.request(self.rules.effort, answer_json_schema()), deadline)
        except GiveUp as exc:
            self.budget.release(reservation)
            return self.offline(incident, f"api_error: {exc}", related)
        attempts += n
        usage, cost = self._bill(reservation, response, prompt, incident)
        text = _answer_text(response)
        try:
            answer = _validated(response, text)
        except InvalidAnswer as bad:
            log.warning("analysis of %s: invalid answer (%s); asking once for a repair", incident.id, bad)
            repaired = True
            outcome = self._repair(incident, prompt, text, bad, deadline)
            if isinstance(outcome, str):
                return self.offline(incident, outcome, related, usage=usage, cost=cost, attempts=attempts)
            answer, more_usage, more_cost, n = outcome
            usage, cost, attempts = usage + more_usage, cost + more_cost, attempts + n
        self.metrics.analyses.labels(source="claude", outcome="repaired" if repaired else "ok").inc()
        return _record(answer, source="claude", model=prompt.model, usage=usage, cost=cost,
                       latency_s=time.monotonic() - started, attempts=attempts, repaired=repaired,
                       incident=incident)

    def _repair(self, incident: Incident, prompt: Prompt, text: str, problem: InvalidAnswer,
                deadline: float) -> tuple[AnalysisAnswer, Usage, float, int] | str:
        echo = text[:MAX_REPAIR_ECHO_CHARS] or "(empty)"
        messages = prompt.messages + [
            {"role": "assistant", "content": echo},
            {"role": "user", "content": f"That answer does not match the required JSON schema ({str(problem)[:500]}). "
                                        "Reply again with only the JSON object, using the same evidence."},
        ]
        price = self.rules.prices[prompt.model]
        worst = worst_case_cost(price, prompt.prompt_bytes + len(echo.encode()) + 600, prompt.max_tokens)
        reservation = self.budget.reserve(worst, new_analysis=False)
        if isinstance(reservation, Refusal):
            return f"invalid_answer ({reservation.reason} before repair)"
        request = prompt.request(self.rules.effort, answer_json_schema()) | {"messages": messages}
        try:
            response, attempts = self._call(request, deadline)
        except GiveUp as exc:
            self.budget.release(reservation)
            return f"invalid_answer (repair failed: {exc})"
        usage, cost = self._bill(reservation, response, prompt, incident)
        try:
            return _validated(response, _answer_text(response)), usage, cost, attempts
        except InvalidAnswer as bad:
            return f"invalid_answer ({str(bad)[:200]})"

    def _call(self, request: dict[str, Any], deadline: float) -> tuple[Any, int]:
        import anthropic

        assert self.client is not None
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            if left < MIN_ATTEMPT_S:
                raise GiveUp(f"deadline of {self.rules.deadline:g}s reached after {attempt - 1} attempt(s)")
            try:
                response = self.client.messages.create(**request, timeout=min(self.rules.request_timeout, left))
                self.metrics.analysis_calls.labels(result="ok").inc()
                return response, attempt
            except anthropic.APIError as exc:
                what = _describe(exc)
                if not _retryable(exc) or attempt >= self.rules.max_attempts:
                    self.metrics.analysis_calls.labels(result="error").inc()
                    raise GiveUp(f"{what} after {attempt} attempt(s)") from None
                self.metrics.analysis_calls.labels(result="retry").inc()
                wait = _retry_after_s(exc)
                if wait is None:
                    wait = min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_MAX_S) * (0.75 + 0.25 * random.random())
                if time.monotonic() + wait + MIN_ATTEMPT_S > deadline:
                    self.metrics.analysis_calls.labels(result="error").inc()
                    raise GiveUp(f"{what}; retry-after {wait:g}s does not fit the deadline") from None
                log.info("Claude call failed (%s); retrying in %.1fs", what, wait)
                if self._stop.wait(wait):
                    raise GiveUp("shutting down") from None

    def _bill(self, reservation, response: Any, prompt: Prompt, incident: Incident) -> tuple[Usage, float]:
        usage = Usage.from_response(getattr(response, "usage", None))
        cost = actual_cost(self.rules.prices[prompt.model], usage)
        self.budget.settle(reservation, cost, incident.id, prompt.model, usage)
        self.metrics.analysis_cost.inc(cost)
        self.metrics.analysis_cost_today.set(self.budget.spent_today())
        for kind, value in usage.as_dict().items():
            self.metrics.analysis_tokens.labels(kind=kind).inc(value)
        return usage, cost

    def _refused(self, incident: Incident, refusal: Refusal, related: list[dict]) -> dict[str, Any]:
        if refusal.reason == BUDGET_EXHAUSTED and refusal.first_today and self.settings.budget.alert_on_budget_exceeded:
            try:
                self.on_budget_alert(refusal)
            except Exception:
                log.exception("raising the budget alert failed")
        return self.offline(incident, refusal.reason, related)

    def offline(self, incident: Incident, reason: str, related: list[dict] | None = None, usage: Usage = NO_USAGE,
                cost: float = 0.0, attempts: int = 0) -> dict[str, Any]:
        started = time.monotonic()
        answer = analyze_offline(incident, reason, related or [])
        self.metrics.analyses.labels(source="offline", outcome=reason.split(":")[0].split(" ")[0]).inc()
        record = _record(answer, source="offline", model=None, usage=usage, cost=cost,
                         latency_s=time.monotonic() - started, attempts=attempts, repaired=False, incident=incident)
        record["offline_reason"] = reason
        return record


def _answer_text(response: Any) -> str:
    # With adaptive thinking the content may start with thinking blocks; the answer is the text block.
    for block in getattr(response, "content", None) or []:
        if getattr(block, "type", None) == "text":
            return block.text
    return ""


def _validated(response: Any, text: str) -> AnalysisAnswer:
    stop = getattr(response, "stop_reason", None)
    if stop in ("max_tokens", "refusal", "model_context_window_exceeded"):
        raise InvalidAnswer(f"the answer stopped early ({stop})")
    return parse_answer(text)


def _record(answer: AnalysisAnswer, source: str, model: str | None, usage: Usage, cost: float, latency_s: float,
            attempts: int, repaired: bool, incident: Incident) -> dict[str, Any]:
    """The analysis as attached to the incident: the answer plus how it was obtained."""
    return {
        **answer.model_dump(),
        "source": source,
        "offline_reason": None,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "usage": usage.as_dict(),
        "cost_usd": round(cost, 6),
        "latency_ms": round(latency_s * 1000, 1),
        "attempts": attempts,
        "repaired": repaired,
        "analyzed_at": rfc3339(time.time_ns()),
        "incident_version": incident.version,
    }
