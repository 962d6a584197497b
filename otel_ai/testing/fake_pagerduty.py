"""A loopback fake of PagerDuty's Events API v2, because PagerDuty cannot be reached from here.

    python -m otel_ai.testing.fake_pagerduty --port 8790
    export PAGERDUTY_EVENTS_URL=http://127.0.0.1:8790/v2/enqueue PAGERDUTY_ROUTING_KEY=test-routing-key

prints one line per event it receives. In a test:

    with FakePagerDuty() as pd:
        ... point otel-ai at pd.events_url with routing key pd.routing_key ...
        assert [e.action for e in pd.events_for(incident_id)] == ["trigger", "acknowledge", "resolve"]

Like PagerDuty it validates each event (routing key, event_action, dedup_key, and for a
trigger payload.summary/source/severity), answers 202 {"status": "success", ...} or 400
"invalid event", and keeps one alert per dedup_key: a trigger for an alert that is
already open is deduplicated into it, as PagerDuty does. rate_limit() answers 429 with
Retry-After, down() 503. Every event is recorded (the last 10 000).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_ai.testing.loopback import LoopbackFake, LoopbackHandler, Outages, serve_from_cli

PATH = "/v2/enqueue"
MAX_BODY_BYTES = 512 * 1024  # PagerDuty's limit per event
MAX_EVENTS = 10_000
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class PdEvent:
    action: str
    dedup_key: str
    body: dict[str, Any]
    status: int  # what the fake answered
    at: float = field(default_factory=time.monotonic)


@dataclass
class PdAlert:
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    severity: str
    triggers: int = 0  # trigger events received for it (deduplicated ones included)


class FakePagerDuty(LoopbackFake, Outages):
    thread_name = "fake-pagerduty"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, routing_key: str = "test-routing-key") -> None:
        LoopbackFake.__init__(self, host, port)
        Outages.__init__(self)
        self.handler = _Handler
        self.routing_key = routing_key
        self.on_event: Callable[[str], None] | None = None  # told one readable line per call
        self._lock = threading.Lock()
        self._events: deque[PdEvent] = deque(maxlen=MAX_EVENTS)
        self._alerts: dict[str, PdAlert] = {}

    @property
    def events_url(self) -> str:
        return self.base_url + PATH

    # ---- what it received ----
    @property
    def events(self) -> list[PdEvent]:
        with self._lock:
            return list(self._events)

    def accepted(self) -> list[PdEvent]:
        return [e for e in self.events if e.status == 202]

    def events_for(self, dedup_key: str) -> list[PdEvent]:
        return [e for e in self.accepted() if e.dedup_key == dedup_key]

    def triggers(self) -> list[PdEvent]:
        return [e for e in self.accepted() if e.action == "trigger"]

    @property
    def alerts(self) -> dict[str, PdAlert]:
        with self._lock:
            return dict(self._alerts)

    # ---- one request ----
    def handle(self, path: str, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path.split("?")[0] != PATH:
            return 404, {"status": "not found", "message": f"no such endpoint {path}"}, {}
        try:
            body = json.loads(raw)
        except ValueError:
            return self._record({}, 400, "invalid JSON"), {"status": "invalid event", "message": "Event object is invalid",
                                                         "errors": ["body is not JSON"]}, {}
        outage = self.outage()
        if outage is not None:
            status, headers = outage
            return self._record(body, status, "scripted outage"), {"status": "unavailable"}, headers
        errors = self._problems(body)
        if errors:
            return self._record(body, 400, "; ".join(errors)), {"status": "invalid event",
                                                                "message": "Event object is invalid",
                                                                "errors": errors}, {}
        self._apply(body)
        self._record(body, 202, "")
        return 202, {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}, {}

    def _problems(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["event must be a JSON object"]
        errors = []
        if self.routing_key and body.get("routing_key") != self.routing_key:
            errors.append("'routing_key' is invalid")
        action = body.get("event_action")
        if action not in ACTIONS:
            errors.append(f"'event_action' must be one of {', '.join(ACTIONS)}")
        if not isinstance(body.get("dedup_key"), str) or not body["dedup_key"] or len(body["dedup_key"]) > 255:
            errors.append("'dedup_key' is missing or too long")
        if action == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                errors.append("'payload' is missing")
            else:
                if not isinstance(payload.get("summary"), str) or not 0 < len(payload["summary"]) <= 1024:
                    errors.append("'payload.summary' must be 1-1024 characters")
                if not payload.get("source"):
                    errors.append("'payload.source' is missing")
                if payload.get("severity") not in SEVERITIES:
                    errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
        return errors

    def _apply(self, body: dict[str, Any]) -> None:
        key, action = body["dedup_key"], body["event_action"]
        with self._lock:
            alert = self._alerts.get(key)
            if action == "trigger":
                payload = body["payload"]
                if alert is None or alert.status == "resolved":
                    alert = self._alerts[key] = PdAlert(key, "triggered", payload["summary"], payload["severity"])
                alert.triggers += 1
            elif alert is not None and alert.status != "resolved":
                alert.status = "acknowledged" if action == "acknowledge" else "resolved"

    def _record(self, body: Any, status: int, problem: str) -> int:
        body = body if isinstance(body, dict) else {}
        event = PdEvent(str(body.get("event_action")), str(body.get("dedup_key")), body, status)
        with self._lock:
            self._events.append(event)
        if self.on_event is not None:
            summary = (body.get("payload") or {}).get("summary", "") if isinstance(body.get("payload"), dict) else ""
            line = f"{status} {event.action:<11} {event.dedup_key} {summary}".rstrip()
            self.on_event(f"{line}  ({problem})" if problem else line)
        return status


class _Handler(LoopbackHandler):
    def _serve(self) -> None:
        raw = self.post_body(MAX_BODY_BYTES)
        if raw is None:
            status, payload, headers = 400, {"status": "invalid event", "message": "POST a JSON event"}, {}
        else:
            status, payload, headers = self.server.fake.handle(self.path, raw)
        self.reply(status, json.dumps(payload).encode(), headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.fake_pagerduty",
                                     description="Serve a fake PagerDuty Events API v2 on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790, help="0 picks a free port; the URL printed has it")
    parser.add_argument("--routing-key", default="test-routing-key", help="'' accepts any")
    args = parser.parse_args(argv)
    fake = FakePagerDuty(args.host, args.port, routing_key=args.routing_key)
    fake.on_event = lambda line: print(line, flush=True)
    return serve_from_cli(fake, lambda: f"fake PagerDuty Events API on {fake.events_url} (export "
                                        f"PAGERDUTY_EVENTS_URL={fake.events_url} PAGERDUTY_ROUTING_KEY={args.routing_key})")


if __name__ == "__main__":
    raise SystemExit(main())
