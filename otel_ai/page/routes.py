"""Admin routes of the incident page: the list, one incident, and its Acknowledge button.

The button posts a form; it is protected like the API's acknowledge: the admin token
(typed into the form, as a browser cannot add our Authorization header) or, with no
token configured, a loopback client. A post whose Origin is another site is refused,
so a page elsewhere cannot acknowledge through a browser on the operator's machine.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from html import escape
from urllib.parse import parse_qs, quote, urlsplit

from otel_ai.admin import INCIDENT_STATUSES, AdminServer, BadRequest, Request, Response
from otel_ai.incidents import IncidentManager
from otel_ai.page.render import CONTENT_SECURITY_POLICY, incident_detail, incident_list, page
from otel_ai.store import IncidentStore

LIST_LIMIT = 200


class IncidentPage:
    def __init__(self, store: IncidentStore, incidents: IncidentManager, trace_url: str | None = None,
                 persisted: Callable[[float], bool] = lambda timeout_s: True) -> None:
        self.store = store
        self.incidents = incidents
        self.trace_url = trace_url
        self.persisted = persisted  # the store is written off the incident lock: the redirect must see the ack
        self._admin: AdminServer | None = None

    def register(self, admin: AdminServer) -> None:
        self._admin = admin
        admin.add_route("GET", r"/incidents", self.list)
        admin.add_route("GET", r"/incidents/(?P<id>[^/]+)", self.show)
        admin.add_route("POST", r"/incidents/(?P<id>[^/]+)/ack", self.acknowledge)

    def list(self, request: Request) -> Response:
        status = request.query_value("status") or None
        if status is not None and status not in INCIDENT_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(INCIDENT_STATUSES)}, got {status!r}")
        incidents = self.store.list(status=status, limit=LIST_LIMIT)
        return _html(200, incident_list(incidents, self.store.count(status=status), status))

    def show(self, request: Request, notice: str = "", status: int = 200) -> Response:
        incident = self.store.get(request.params["id"])
        if incident is None:
            return _html(404, page("Unknown incident", f"<h1>Unknown incident</h1><p>No incident has the id "
                                                        f"<code>{escape(request.params['id'])}</code>. "
                                                        '<a href="/incidents">All incidents</a></p>'))
        return _html(status, incident_detail(incident, self.trace_url, self._needs_token(), notice))

    def acknowledge(self, request: Request) -> Response:
        if not _same_origin(request):
            return Response.error(403, "cross-site form post refused")
        form = parse_qs(request.body.decode("utf-8", "replace"), max_num_fields=8)
        who = (form.get("by") or [""])[-1].strip()[:100]
        token = (form.get("token") or [None])[-1]
        assert self._admin is not None
        if not self._admin.authorized(request, token=token if self._needs_token() else None):
            return self.show(request, "Not acknowledged: wrong admin token (or, without one, "
                                      "only a browser on this machine may acknowledge).", status=401)
        if not who:
            return self.show(request, "Not acknowledged: say who you are.", status=400)
        incident = self.incidents.acknowledge(request.params["id"], f"{who} (incident page)", time.time_ns())
        if incident is None:
            return self.show(request, "Not acknowledged: this incident is not open.", status=409)
        self.persisted(2.0)
        return Response(303, b"", headers={"Location": f"/incidents/{quote(incident.id)}"})

    def _needs_token(self) -> bool:
        return bool(self._admin is not None and self._admin.token)


def _html(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), "text/html; charset=utf-8",
                    {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"})


def _same_origin(request: Request) -> bool:
    """Browsers send Origin with every form post; a client that sends none is not a browser."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")
