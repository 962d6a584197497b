"""One human-readable line per incident change, for a terminal or a log collector."""
from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from otel_ai.analysis.render import percent
from otel_ai.model import DEPENDENCY, SYSTEM, Incident
from otel_ai.problems import root_title
from otel_ai.timefmt import rfc3339

_RESET = "\x1b[0m"
_SEVERITY_COLOUR = {"critical": "\x1b[31;1m", "warning": "\x1b[33m", "info": "\x1b[36m"}
_CHANGE_COLOUR = {"RESOLVED": "\x1b[32m", "REOPENED": "\x1b[35;1m"}
# Pads OPENED and UPDATED to one column (the documented "OPENED  critical ..." layout);
# longer words just push the line right rather than being cut.
_CHANGE_WIDTH = 7


def _number(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "?"
    if unit == "ms":
        return f"{value:.0f}ms"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:g}{unit}"


def _percent(share: Any) -> str:
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return "?"
    return f"{share * 100:.0f}%"


def _measurement(incident: Incident) -> str:
    """'error_rate 35.0% (threshold 10.0%, baseline 0.4%, 1m)', or the summary without a metric."""
    data = incident.data
    metric = data.get("metric")
    if not metric:
        return incident.summary
    unit = str(data.get("unit") or "")
    value = data.get("current_value", data.get("value"))
    resolved = incident.status == "resolved" and "peak_value" in data
    details = []
    if "threshold" in data:
        details.append(f"threshold {_number(data['threshold'], unit)}")
    baseline = data.get("baseline_value", data.get("baseline"))
    if baseline is not None:
        details.append(f"baseline {_number(baseline, unit)}")
    if data.get("window"):
        details.append(str(data["window"]))
    if resolved:
        recovery = data.get("recovery_value")
        at_recovery = f"{_number(recovery, unit)} at recovery" if recovery is not None else "no traffic at recovery"
        text = f"{metric} peak {_number(data['peak_value'], unit)}, {at_recovery}"
    else:
        text = f"{metric} {_number(value, unit)}"
    return f"{text} ({', '.join(details)})" if details else text


def _suspect(incident: Incident) -> str:
    if not incident.suspects:
        return ""
    top = incident.suspects[0]
    text = f"; suspect {top.get('key', '?')}={top.get('value', '?')}"
    if "bad_share" in top or "good_share" in top:
        text += f" ({_percent(top.get('bad_share'))} of bad vs {_percent(top.get('good_share'))} of good)"
    return text


def _analysis(incident: Incident) -> str:
    """'claude-sonnet-5-5 $0.0121: <top cause> (78%); rollback recommended'."""
    a = incident.analysis or {}
    source = a.get("model") or f"offline ({a.get('offline_reason') or 'no reason'})"
    causes = a.get("root_causes") or []
    top = f"{causes[0].get('cause', '?')} ({percent(causes[0].get('probability'))})" if causes else "no clear cause"
    cost = f" ${a['cost_usd']:.4f}" if a.get("cost_usd") else ""
    rollback = "; rollback recommended" if a.get("rollback_needed") else ""
    return f"{source}{cost}: {top}{rollback}"


def _problem(incident: Incident) -> str:
    """' problem prb_… (root: network into timetable-service)': which incidents are one fault."""
    if not incident.problem_id:
        return ""
    root = f" (root: {root_title(incident.root_cause)})" if incident.root_cause else ""
    return f" problem {incident.problem_id}{root}"


def format_incident_line(incident: Incident, colour: bool = False) -> str:
    subject = incident.subject
    where = subject.label() if subject.kind in (DEPENDENCY, SYSTEM) else f"{subject.service} {subject.label()}"
    change = (incident.last_change or "changed").upper()
    severity = incident.severity
    change_text = change.ljust(_CHANGE_WIDTH)
    if colour:
        severity = f"{_SEVERITY_COLOUR.get(severity, '')}{severity}{_RESET}"
        change_text = f"{_CHANGE_COLOUR.get(change, chr(27) + '[1m')}{change}{_RESET}" + " " * max(
            0, _CHANGE_WIDTH - len(change))
    if incident.last_change == "analyzed" and incident.analysis:
        detail = _analysis(incident)
    else:
        detail = f"{_measurement(incident)} conf {incident.confidence:.2f}{_suspect(incident)}"
    return (f"{rfc3339(incident.updated_at_ns)} {change_text} {severity} {incident.type} {where}: {detail} "
            f"[{incident.id}{_problem(incident)}]")


class ConsoleExporter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        isatty = getattr(self._stream, "isatty", None)
        self._colour = bool(isatty and isatty())

    def export(self, incident: Incident) -> None:
        line = format_incident_line(incident, colour=self._colour)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def shutdown(self) -> None:
        with self._lock:
            self._stream.flush()
