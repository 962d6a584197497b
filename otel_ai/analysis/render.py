"""Plain-text rendering of an analysis, in the order of the seed's Slack formatter:
root causes, recommended actions, rollback decision, impact."""
from __future__ import annotations

from typing import Any


def format_analysis(analysis: dict[str, Any], top: int = 3) -> str:
    lines: list[str] = []
    if analysis.get("summary"):
        lines.append(str(analysis["summary"]))
    causes = analysis.get("root_causes") or []
    if causes:
        lines.append("Root causes:")
        lines += [f"  • {c.get('cause', '?')} ({percent(c.get('probability'))})" for c in causes[:top]]
    elif analysis.get("enough_evidence") is False:
        lines.append("Root causes: not enough evidence to single one out")
    actions = analysis.get("actions") or []
    if actions:
        lines.append("Recommended actions:")
        lines += [f"  • {a}" for a in actions[:top]]
    if analysis.get("rollback_needed"):
        lines.append(f"Rollback recommended: {analysis.get('rollback_reasoning', '')}")
    elif analysis.get("rollback_reasoning"):
        lines.append(f"No rollback: {analysis['rollback_reasoning']}")
    if analysis.get("user_impact"):
        lines.append(f"Impact: {analysis['user_impact']}")
    lines.append(_provenance(analysis))
    return "\n".join(lines)


def percent(value: Any) -> str:
    """84.0 -> '84%', 62.5 -> '62.5%'; the answer's percentages are numbers 0-100."""
    return f"{value:g}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?%"


def _provenance(analysis: dict[str, Any]) -> str:
    if analysis.get("source") == "offline":
        return f"(offline analysis: {analysis.get('offline_reason') or 'no reason given'})"
    usage = analysis.get("usage") or {}
    tokens = (f"{usage.get('input_tokens', 0)} in + {usage.get('cache_read_input_tokens', 0)} cached + "
              f"{usage.get('cache_creation_input_tokens', 0)} cache-write / {usage.get('output_tokens', 0)} out")
    return (f"({analysis.get('model')}, confidence {percent(analysis.get('confidence'))}, {tokens} tokens, "
            f"${analysis.get('cost_usd', 0):.4f}, {analysis.get('latency_ms', 0):.0f} ms, "
            f"{analysis.get('attempts', 0)} attempt(s))")
