"""Verify and parse the Slack "Acknowledge" button click (POST /slack/actions).

Anyone who can reach the admin port can POST to it, and an acknowledgement changes
an incident's state and stops paging. So a click counts only if Slack signed it
(HMAC with the app's signing secret, checked by slack_sdk's SignatureVerifier), it is
fresh (within Slack's 5-minute window) and its signature has not been seen before
(a captured request cannot be replayed inside that window). Everything after the
signature is still parsed as untrusted input: the payload is Slack's JSON, but we
accept only the shape and the incident-id format we sent.

Slack wants an answer within 3 seconds; this module does CPU work only, no I/O.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import Clock, SignatureVerifier

ACK_ACTION_ID = "ack_incident"
# SignatureVerifier refuses timestamps further than this from the clock; a signature
# only needs remembering for as long as it would otherwise be accepted.
WINDOW_SECONDS = 5 * 60
# The clock is read again after the HMAC check; the margin keeps a signature that was
# just accepted at the window's edge from being expired before its replay is refused.
_FORGET_AFTER_SECONDS = WINDOW_SECONDS + 60
MAX_SEEN_SIGNATURES = 10_000
MAX_VALUE_CHARS = 200

_INCIDENT_ID = re.compile(r"inc_[0-9a-f]{16}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SLACK_USER_ID = re.compile(r"[A-Za-z0-9]{1,64}")
# We may later POST to response_url; never to anything but Slack's own hooks host.
_RESPONSE_URL_PREFIX = "https://hooks.slack.com/"


class Unauthorized(Exception):
    """Signature missing, wrong, stale, or replayed (HTTP 401)."""


class BadPayload(Exception):
    """Signed, but not an interaction we understand (HTTP 400)."""


@dataclass(frozen=True)
class AckAction:
    incident_id: str
    user_id: str  # Slack user id, e.g. "U123"
    user_name: str  # username or name, may be ""
    channel_id: str  # may be ""
    message_ts: str  # may be ""
    response_url: str  # may be "" (also when it is not a hooks.slack.com URL)


class _CallableClock(Clock):
    """SignatureVerifier wants an object with now(); tests inject a plain function."""

    def __init__(self, fn: Callable[[], float]):
        self._fn = fn

    def now(self) -> float:
        return self._fn()


class SlackActionVerifier:
    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time,
                 max_body_bytes: int = 64 * 1024):
        if not isinstance(signing_secret, str) or not signing_secret.strip():
            raise ValueError("Slack signing secret is empty: configure SLACK_SIGNING_SECRET "
                             "(Slack app > Basic Information > Signing Secret)")
        self._clock = clock
        self._verifier = SignatureVerifier(signing_secret, clock=_CallableClock(clock))
        self._max_body_bytes = max_body_bytes
        self._seen: OrderedDict[str, int] = OrderedDict()  # signature -> request timestamp
        self._lock = threading.Lock()

    @property
    def replay_cache_size(self) -> int:
        with self._lock:
            return len(self._seen)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise Unauthorized unless the request is signed by Slack, fresh, and not a replay.
        Header names case-insensitive."""
        self._check_size(body)
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-slack-request-timestamp")
        signature = lowered.get("x-slack-signature")
        if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
            raise Unauthorized("missing or non-integer X-Slack-Request-Timestamp")
        # Checked before the HMAC: compare_digest raises TypeError on non-ASCII strings.
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            raise Unauthorized("missing or malformed X-Slack-Signature")
        try:
            body.decode("utf-8")  # SignatureVerifier decodes it; Slack only sends ASCII
        except UnicodeDecodeError:
            raise Unauthorized("body is not UTF-8") from None
        if not self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise Unauthorized("bad or stale Slack signature")
        # Only verified signatures are remembered, so garbage cannot evict real entries.
        # Check and insert under one lock: of two identical concurrent requests, one wins.
        with self._lock:
            self._expire(self._clock())
            if signature in self._seen:
                raise Unauthorized("replayed Slack request")
            self._seen[signature] = int(timestamp)
            while len(self._seen) > MAX_SEEN_SIGNATURES:
                self._seen.popitem(last=False)

    def parse_ack(self, body: bytes) -> AckAction | None:
        """The acknowledge click in a verified body; None for other interaction types or
        other action_ids; BadPayload for anything malformed."""
        self._check_size(body)
        payload = _decode_payload(body)
        kind = payload.get("type")
        if not isinstance(kind, str):
            raise BadPayload("payload has no interaction type")
        if kind != "block_actions":
            return None
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions:
            raise BadPayload("block_actions without an actions list")
        if not all(isinstance(a, dict) for a in actions):
            raise BadPayload("an action is not an object")
        acks = [a for a in actions if a.get("action_id") == ACK_ACTION_ID]
        if not acks:
            return None
        if len(acks) > 1:
            raise BadPayload(f"more than one {ACK_ACTION_ID} action")
        value = acks[0].get("value")
        if not isinstance(value, str):
            raise BadPayload(f"{ACK_ACTION_ID} without a string value")
        if len(value) > MAX_VALUE_CHARS or not _INCIDENT_ID.fullmatch(value):
            raise BadPayload(f"{ACK_ACTION_ID} value is not an incident id")

        user = payload.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not _SLACK_USER_ID.fullmatch(user_id):
            raise BadPayload("payload has no valid user.id")
        response_url = _str_at(payload, "response_url")
        if not response_url.startswith(_RESPONSE_URL_PREFIX):
            response_url = ""
        return AckAction(
            incident_id=value,
            user_id=user_id,
            user_name=_str_at(payload, "user", "username") or _str_at(payload, "user", "name"),
            channel_id=_str_at(payload, "channel", "id") or _str_at(payload, "container", "channel_id"),
            message_ts=_str_at(payload, "message", "ts") or _str_at(payload, "container", "message_ts"),
            response_url=response_url,
        )

    def handle(self, body: bytes, headers: Mapping[str, str]) -> AckAction | None:
        """verify + parse_ack."""
        self.verify(body, headers)
        return self.parse_ack(body)

    def _check_size(self, body: bytes) -> None:
        if len(body) > self._max_body_bytes:
            raise BadPayload(f"body larger than {self._max_body_bytes} bytes")

    def _expire(self, now: float) -> None:
        # Insertion order is close to timestamp order (Slack stamps as it sends), so
        # dropping expired entries from the front is enough; a stray later one goes
        # at the next pass or by the size bound.
        while self._seen:
            oldest_ts = next(iter(self._seen.values()))
            if now - oldest_ts <= _FORGET_AFTER_SECONDS:
                break
            self._seen.popitem(last=False)


def _decode_payload(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("ascii")  # a form body is percent-encoded ASCII
        fields = parse_qs(text, strict_parsing=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise BadPayload("body is not application/x-www-form-urlencoded") from None
    values = fields.get("payload")
    if not values:
        raise BadPayload("no payload field")
    if len(values) != 1:
        raise BadPayload("more than one payload field")
    try:
        payload = json.loads(values[0])
    except (ValueError, RecursionError):
        raise BadPayload("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadPayload("payload is not a JSON object")
    return payload


def _str_at(obj: Any, *keys: str) -> str:
    """The string at obj[k1][k2]..., or "" if any step is missing or of another type."""
    for key in keys:
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(key)
    return obj if isinstance(obj, str) else ""
