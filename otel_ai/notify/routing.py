"""Which notifiers get an incident: Alertmanager's routing, flat.

Routes are tried in order; the first whose matchers all hold decides, unless it says
`continue`, and then later routes may add notifiers. With no routes configured every
notifier gets every incident. A matcher is a value or a list of values (any of them).
"""
from __future__ import annotations

from otel_ai.config import Route
from otel_ai.model import Incident


def _fields(incident: Incident) -> dict[str, str]:
    return {"severity": incident.severity, "service": incident.subject.service, "type": incident.type,
            "route": incident.subject.route}


def _matches(route: Route, fields: dict[str, str]) -> bool:
    for key, wanted in route.match.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if fields[key] not in allowed:
            return False
    return True


class Router:
    def __init__(self, routes: list[Route], notifiers: list[str]) -> None:
        self.routes = routes
        self.notifiers = list(notifiers)

    def notifiers_for(self, incident: Incident) -> list[str]:
        if not self.routes:
            return list(self.notifiers)
        fields = _fields(incident)
        picked: list[str] = []
        for route in self.routes:
            if not _matches(route, fields):
                continue
            picked += [n for n in route.notifiers if n in self.notifiers and n not in picked]
            if not route.continue_:
                break
        return picked
