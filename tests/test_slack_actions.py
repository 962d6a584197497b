"""The Slack Acknowledge click: only Slack-signed, fresh, first-seen requests count."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any
from urllib.parse import urlencode

import pytest

from otel_ai.notify.slack_actions import (
    MAX_SEEN_SIGNATURES,
    AckAction,
    BadPayload,
    SlackActionVerifier,
    Unauthorized,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_700_000_000
INCIDENT = "inc_0123456789abcdef"


class FakeClock:
    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


def slack_payload(**overrides: Any) -> dict[str, Any]:
    """A block_actions payload shaped like the one Slack sends for a button click."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U123", "username": "alice", "name": "alice", "team_id": "T1"},
        "api_app_id": "A1",
        "container": {"type": "message", "message_ts": "1700000000.000100",
                      "channel_id": "C42", "is_ephemeral": False},
        "channel": {"id": "C42", "name": "incidents"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "incident"},
        "response_url": "https://hooks.slack.com/actions/T1/123/abc",
        "actions": [{"action_id": "ack_incident", "block_id": "b1", "type": "button",
                     "value": INCIDENT, "action_ts": "1700000001.000200",
                     "text": {"type": "plain_text", "text": "Acknowledge"}}],
    }
    payload.update(overrides)
    return payload


def form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode("ascii")


def sign(body: bytes, ts: int | str = NOW, secret: str = SECRET) -> dict[str, str]:
    """Headers exactly as Slack computes them: v0= + HMAC-SHA256(secret, "v0:{ts}:{body}")."""
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + digest}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(clock: FakeClock) -> SlackActionVerifier:
    return SlackActionVerifier(SECRET, clock=clock)


def test_valid_ack_is_parsed(verifier: SlackActionVerifier) -> None:
    body = form(slack_payload())
    action = verifier.handle(body, sign(body))
    assert action == AckAction(
        incident_id=INCIDENT, user_id="U123", user_name="alice", channel_id="C42",
        message_ts="1700000000.000100", response_url="https://hooks.slack.com/actions/T1/123/abc",
    )


def test_header_names_are_case_insensitive(verifier: SlackActionVerifier) -> None:
    body = form(slack_payload())
    headers = {k.lower(): v for k, v in sign(body).items()}
    assert verifier.handle(body, headers) is not None


def test_user_name_falls_back_and_foreign_response_url_is_dropped(verifier: SlackActionVerifier) -> None:
    body = form(slack_payload(user={"id": "W9", "name": "bob"}, channel=None, message=None,
                              response_url="http://169.254.169.254/latest"))
    action = verifier.handle(body, sign(body))
    assert action is not None
    assert (action.user_id, action.user_name) == ("W9", "bob")
    # channel and message ts come from the container when the top-level objects are absent
    assert (action.channel_id, action.message_ts) == ("C42", "1700000000.000100")
    assert action.response_url == ""


def _tamper_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(INCIDENT.encode(), b"inc_fedcba9876543210"), headers


def _tamper_ts(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "X-Slack-Request-Timestamp": str(NOW - 1)}


def _no_v0(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "X-Slack-Signature": headers["X-Slack-Signature"][3:]}


def _v1(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "X-Slack-Signature": "v1=" + headers["X-Slack-Signature"][3:]}


def _no_headers(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {}


def _no_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {"X-Slack-Request-Timestamp": headers["X-Slack-Request-Timestamp"]}


def _no_timestamp(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {"X-Slack-Signature": headers["X-Slack-Signature"]}


def _wrong_secret(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, sign(body, secret="not-the-secret")


def _non_integer_ts(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, sign(body, ts=f"{NOW}.5")


def _signed_sign_prefixed_ts(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, sign(body, ts=f"+{NOW}")


def _non_ascii_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "X-Slack-Signature": "v0=" + "é" * 64}


def _uppercase_hex(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "X-Slack-Signature": headers["X-Slack-Signature"].upper()}


def _non_utf8_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    bad = body + b"\xff"
    return bad, sign(bad)


@pytest.mark.parametrize("tamper", [
    _wrong_secret, _no_headers, _no_signature, _no_timestamp, _tamper_body, _tamper_ts,
    _no_v0, _v1, _non_integer_ts, _signed_sign_prefixed_ts, _non_ascii_signature,
    _uppercase_hex, _non_utf8_body,
])
def test_bad_signatures_are_unauthorized_and_change_nothing(verifier: SlackActionVerifier, tamper) -> None:
    body = form(slack_payload())
    bad_body, bad_headers = tamper(body, sign(body))
    with pytest.raises(Unauthorized):
        verifier.handle(bad_body, bad_headers)
    assert verifier.replay_cache_size == 0


@pytest.mark.parametrize("offset", [-6 * 60, 6 * 60, -5 * 60 - 1, 5 * 60 + 1])
def test_stale_or_future_timestamps_are_unauthorized(clock: FakeClock, verifier: SlackActionVerifier,
                                                      offset: int) -> None:
    body = form(slack_payload())
    with pytest.raises(Unauthorized):
        verifier.verify(body, sign(body, ts=NOW + offset))


@pytest.mark.parametrize("offset", [-4 * 60, 4 * 60, -5 * 60, 0])
def test_timestamps_within_five_minutes_are_accepted(verifier: SlackActionVerifier, offset: int) -> None:
    body = form(slack_payload())
    assert verifier.handle(body, sign(body, ts=NOW + offset)) is not None


def test_replay_is_refused_and_stale_after_the_window(clock: FakeClock, verifier: SlackActionVerifier) -> None:
    body = form(slack_payload())
    headers = sign(body)
    assert verifier.handle(body, headers) is not None
    with pytest.raises(Unauthorized, match="replay"):
        verifier.handle(body, headers)
    clock.t += 6 * 60
    with pytest.raises(Unauthorized, match="stale"):
        verifier.handle(body, headers)
    # Once nothing could accept it any more, the signature is forgotten.
    clock.t += 60 + 1
    fresh = form(slack_payload())
    verifier.handle(fresh, sign(fresh, ts=int(clock.t)))
    assert verifier.replay_cache_size == 1


def test_only_verified_signatures_enter_the_replay_cache(verifier: SlackActionVerifier) -> None:
    body = form(slack_payload())
    headers = sign(body)
    for i in range(200):
        garbage = {**headers, "X-Slack-Signature": "v0=" + hashlib.sha256(str(i).encode()).hexdigest()}
        with pytest.raises(Unauthorized):
            verifier.verify(body, garbage)
    # The real signature on a forged body must not burn the real request either.
    forged, _ = _tamper_body(body, headers)
    with pytest.raises(Unauthorized):
        verifier.verify(forged, headers)
    assert verifier.replay_cache_size == 0
    assert verifier.handle(body, headers) is not None
    assert verifier.replay_cache_size == 1


def test_concurrent_identical_requests_pass_exactly_once(verifier: SlackActionVerifier) -> None:
    body = form(slack_payload())
    headers = sign(body)
    start = threading.Barrier(20)
    results: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        start.wait()
        try:
            verifier.handle(body, headers)
            outcome = "ok"
        except Unauthorized:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 19


def test_replay_cache_is_bounded(verifier: SlackActionVerifier) -> None:
    last = b""
    for i in range(20_000):
        last = f"payload=%7B%7D&n={i}".encode()  # distinct bodies -> distinct signatures
        verifier.verify(last, sign(last))
    assert verifier.replay_cache_size == MAX_SEEN_SIGNATURES
    with pytest.raises(Unauthorized, match="replay"):
        verifier.verify(last, sign(last))


def _action(**fields: Any) -> dict[str, Any]:
    return {"action_id": "ack_incident", "type": "button", "value": INCIDENT, **fields}


MALFORMED: dict[str, bytes] = {
    "raw json, not form-encoded": json.dumps(slack_payload()).encode(),
    "empty body": b"",
    "no payload field": b"foo=bar",
    "empty payload field": b"payload=",
    "two payload fields": form(slack_payload()) + b"&" + form(slack_payload()),
    "not ascii": form(slack_payload()) + "&x=é".encode(),
    "payload not json": b"payload=%7Bnot+json",
    "payload json array": form([slack_payload()]),
    "payload json string": form("block_actions"),
    "payload json null": form(None),
    "deeply nested payload": b"payload=" + b"[" * 30_000,  # RecursionError in json
    "no type": form({k: v for k, v in slack_payload().items() if k != "type"}),
    "type not a string": form(slack_payload(type=["block_actions"])),
    "no actions": form({k: v for k, v in slack_payload().items() if k != "actions"}),
    "actions not a list": form(slack_payload(actions=_action())),
    "actions empty": form(slack_payload(actions=[])),
    "action not an object": form(slack_payload(actions=["ack_incident"])),
    "two ack actions": form(slack_payload(actions=[_action(), _action()])),
    "ack without value": form(slack_payload(actions=[{"action_id": "ack_incident"}])),
    "ack with numeric value": form(slack_payload(actions=[_action(value=12345)])),
    "ack with null value": form(slack_payload(actions=[_action(value=None)])),
    "value too long": form(slack_payload(actions=[_action(value=INCIDENT + "0" * 200)])),
    "no user": form({k: v for k, v in slack_payload().items() if k != "user"}),
    "user without id": form(slack_payload(user={"username": "alice"})),
    "user not an object": form(slack_payload(user="U123")),
    "user id not a string": form(slack_payload(user={"id": 123})),
    "user id empty": form(slack_payload(user={"id": ""})),
    "user id with newline": form(slack_payload(user={"id": "U1\nforged log line"})),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_signed_payloads_are_bad(verifier: SlackActionVerifier, body: bytes) -> None:
    with pytest.raises(BadPayload):
        verifier.handle(body, sign(body))


@pytest.mark.parametrize("value", [
    "../../etc", "inc_1; drop", "inc_0123456789ABCDEF", "inc_0123456789abcde",
    "inc_0123456789abcdef0", INCIDENT + "\n", " " + INCIDENT, "", "inc_0123456789abcdeg",
])
def test_values_that_are_not_incident_ids_are_bad(verifier: SlackActionVerifier, value: str) -> None:
    body = form(slack_payload(actions=[_action(value=value)]))
    with pytest.raises(BadPayload):
        verifier.handle(body, sign(body))


@pytest.mark.parametrize("payload", [
    slack_payload(actions=[_action(action_id="open_dashboard", value="https://grafana")]),
    slack_payload(type="view_submission", actions=None),
    slack_payload(type="shortcut"),
], ids=["other action_id", "view_submission", "shortcut"])
def test_other_interactions_are_ignored(verifier: SlackActionVerifier, payload: dict[str, Any]) -> None:
    body = form(payload)
    assert verifier.handle(body, sign(body)) is None


def test_oversized_body_is_refused_before_any_signature_work(clock: FakeClock) -> None:
    verifier = SlackActionVerifier(SECRET, clock=clock, max_body_bytes=1024)
    body = form(slack_payload(padding="x" * 2000))
    # Unsigned and still BadPayload, not Unauthorized: the size check comes first.
    with pytest.raises(BadPayload, match="larger"):
        verifier.handle(body, {})
    with pytest.raises(BadPayload, match="larger"):
        verifier.handle(body, sign(body))
    assert verifier.replay_cache_size == 0
    small = form(slack_payload())
    assert len(small) <= 1024 and verifier.handle(small, sign(small)) is not None


@pytest.mark.parametrize("secret", ["", "   "])
def test_empty_signing_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
        SlackActionVerifier(secret)
