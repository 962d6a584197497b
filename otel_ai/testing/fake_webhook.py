"""A loopback webhook receiver that keeps what it gets, like an Alertmanager receiver would.

    python -m otel_ai.testing.fake_webhook --port 8791 [--secret s3cret]
    export AI_WEBHOOK_URL=http://127.0.0.1:8791/hook AI_WEBHOOK_SECRET=s3cret

prints one line per POST. In a test:

    with FakeWebhook(secret="s3cret") as hook:
        ... point otel-ai at hook.url ...
        assert [p["status"] for p in hook.payloads()] == ["firing", "resolved"]

It checks the HMAC-SHA256 signature when it has a secret (401 when it is missing or
wrong), remembers Idempotency-Keys (a repeat is answered 200 and counted as a
duplicate, not kept twice), and can rate limit (429 + Retry-After) or go down (503).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_ai.testing.loopback import LoopbackFake, LoopbackHandler, Outages, serve_from_cli

SIGNATURE_HEADER = "x-otel-ai-signature-256"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_KEPT = 10_000


@dataclass
class WebhookCall:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int
    duplicate: bool = False
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeWebhook(LoopbackFake, Outages):
    thread_name = "fake-webhook"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: str = "") -> None:
        LoopbackFake.__init__(self, host, port)
        Outages.__init__(self)
        self.handler = _Handler
        self.secret = secret
        self.on_call: Callable[[str], None] | None = None  # told one readable line per call
        self._lock = threading.Lock()
        self._calls: deque[WebhookCall] = deque(maxlen=MAX_KEPT)
        self._keys: dict[str, None] = {}

    @property
    def url(self) -> str:
        return self.base_url + "/hook"

    @property
    def calls(self) -> list[WebhookCall]:
        with self._lock:
            return list(self._calls)

    def payloads(self) -> list[dict[str, Any]]:
        """Accepted notifications, in arrival order, without duplicates."""
        return [c.json() for c in self.calls if c.status == 200 and not c.duplicate]

    def duplicates(self) -> int:
        return sum(c.duplicate for c in self.calls)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        extra: dict[str, str] = {}
        duplicate = False
        outage = self.outage()
        if outage is not None:
            status, extra = outage
        elif self.secret and not hmac.compare_digest(
                headers.get(SIGNATURE_HEADER, ""),
                "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()):
            status = 401
        else:
            try:
                json.loads(body)
                status = 200
            except ValueError:
                status = 400
        key = headers.get("idempotency-key")
        if status == 200 and key:
            with self._lock:
                duplicate = key in self._keys
                self._keys[key] = None
                while len(self._keys) > MAX_KEPT:
                    self._keys.pop(next(iter(self._keys)))
        with self._lock:
            self._calls.append(WebhookCall(path, headers, body, status, duplicate))
        if self.on_call is not None:
            self.on_call(_describe(status, body, duplicate, bool(headers.get(SIGNATURE_HEADER))))
        return status, extra


def _describe(status: int, body: bytes, duplicate: bool, signed: bool) -> str:
    try:
        payload = json.loads(body)
        alert = (payload.get("alerts") or [{}])[0]
        labels = alert.get("labels") or {}
        what = (f"{payload.get('status')} {labels.get('alertname')} {labels.get('service', '')} "
                f"{labels.get('route', '')} [{labels.get('incident_id')}]")
    except (ValueError, AttributeError, IndexError):
        what = f"{len(body)} bytes, not an Alertmanager payload"
    return f"{status} {what}{' (duplicate)' if duplicate else ''}{' signed' if signed else ''}"


class _Handler(LoopbackHandler):
    def _serve(self) -> None:
        raw = self.post_body(MAX_BODY_BYTES)
        if raw is None:
            status, extra = 400, {}
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = self.server.fake.handle(self.path, headers, raw)
        self.reply(status, headers=extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.fake_webhook",
                                     description="Serve a webhook receiver on loopback and print what it gets.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791, help="0 picks a free port; the URL printed has it")
    parser.add_argument("--secret", default="", help="check the HMAC-SHA256 signature with this secret")
    args = parser.parse_args(argv)
    fake = FakeWebhook(args.host, args.port, secret=args.secret)
    fake.on_call = lambda line: print(line, flush=True)
    return serve_from_cli(fake, lambda: f"fake webhook receiver on {fake.url} (export AI_WEBHOOK_URL={fake.url})")


if __name__ == "__main__":
    raise SystemExit(main())
