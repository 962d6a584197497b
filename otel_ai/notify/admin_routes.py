"""Admin HTTP routes of the incident lifecycle: Slack's Acknowledge button, acknowledge
from the CLI, and silences. Registered on the admin port by the app."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from otel_ai.admin import AdminServer, BadRequest, Request, Response
from otel_ai.incidents import IncidentManager
from otel_ai.notify.silences import SilenceError, Silences
from otel_ai.notify.slack_actions import BadPayload, SlackActionVerifier, Unauthorized
from otel_ai.timefmt import parse_duration

log = logging.getLogger(__name__)


PERSIST_WAIT_S = 2.0


class LifecycleRoutes:
    def __init__(self, incidents: IncidentManager, silences: Silences, verifier: SlackActionVerifier | None,
                 persisted: Callable[[float], bool] = lambda timeout_s: True) -> None:
        self.incidents = incidents
        self.silences = silences
        self.verifier = verifier
        # Waits until the store has every change made so far: the API answers with what a
        # following read of the store (the CLI, GET /api/incidents) will see.
        self.persisted = persisted

    def register(self, admin: AdminServer) -> None:
        # Public: Slack cannot send our admin token; the request signature is its credential.
        admin.add_route("POST", r"/slack/actions", self.slack_action)
        admin.add_route("POST", r"/api/incidents/(?P<id>[^/]+)/ack", self.ack, private=True)
        admin.add_route("GET", r"/api/silences", self.list_silences)
        admin.add_route("POST", r"/api/silences", self.add_silence, private=True)
        admin.add_route("DELETE", r"/api/silences/(?P<id>[^/]+)", self.expire_silence, private=True)

    def slack_action(self, request: Request) -> Response:
        if self.verifier is None:
            return Response.error(404, "Slack interactivity is not configured (set SLACK_SIGNING_SECRET)")
        try:
            action = self.verifier.handle(request.body, request.headers)
        except Unauthorized as exc:
            log.warning("refused a Slack action from %s: %s", request.client, exc)
            return Response.error(401, "invalid Slack signature")
        except BadPayload as exc:
            return Response.error(400, str(exc))
        if action is None:
            return Response.text(200, "")  # another kind of interaction: acknowledged, ignored
        incident = self.incidents.acknowledge(action.incident_id, action.user_id, time.time_ns())
        if incident is None:
            log.info("Slack ack for %s by %s: incident not open", action.incident_id, action.user_id)
        else:
            self.persisted(PERSIST_WAIT_S / 2)
        # Slack wants a 200 within 3 s; the message update and thread note go through the outbox.
        return Response.text(200, "")

    def ack(self, request: Request) -> Response:
        body = _json(request)
        who = str(body.get("by") or "").strip()[:100]
        if not who:
            raise BadRequest("say who acknowledges: {\"by\": \"alice\"}")
        incident = self.incidents.acknowledge(request.params["id"], who, time.time_ns())
        if incident is None:
            return Response.error(409, f"incident {request.params['id']} is not open (unknown or resolved)")
        self.persisted(PERSIST_WAIT_S)
        return Response.json(200, incident.snapshot())

    def list_silences(self, request: Request) -> Response:
        expired = request.query_value("expired") in ("1", "true")
        return Response.json(200, {"silences": [s.as_dict() for s in self.silences.list(include_expired=expired)]})

    def add_silence(self, request: Request) -> Response:
        body = _json(request)
        try:
            duration = parse_duration(body.get("duration", ""))
            silence = self.silences.add(body.get("matchers") or {}, duration, str(body.get("created_by", "api")),
                                        str(body.get("comment", "")))
        except (SilenceError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        return Response.json(201, silence.as_dict())

    def expire_silence(self, request: Request) -> Response:
        if not self.silences.expire(request.params["id"]):
            return Response.error(404, f"no active silence {request.params['id']}")
        return Response.json(200, {"expired": request.params["id"]})


def _json(request: Request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body
