"""A loopback fake of the Slack Web API, because Slack cannot be reached from here.

Tests and users point the real `slack_sdk.WebClient` at it, so the SDK's own request
encoding, error classes and retry handlers run unchanged against real HTTP:

    python -m otel_ai.testing.fake_slack --port 8788 [--token xoxb-test]
    export SLACK_API_URL=http://127.0.0.1:8788/api/      # then run otel-ai as usual

or, in a test:

    with FakeSlack() as fake:
        client = slack_sdk.WebClient(token="xoxb-test", base_url=fake.url)
        fake.fail("chat.postMessage", "internal_error", status=500)
        ...
        assert fake.channel_messages("#incidents")[-1]["text"].startswith("checkout")

Served under /api/: auth.test, chat.postMessage, chat.update, conversations.history and
conversations.replies, by POST (JSON, urlencoded or multipart body) or GET (query string).
Like Slack, API errors are HTTP 200 {"ok": false, "error": ...}; only scripted failures,
rate limits (429 + Retry-After) and down() (503) use other statuses. Messages live in
memory, stored under the channel string they were posted to (names are not resolved).
Every call is recorded, the last 10 000 kept. signed_action() builds a signed
block_actions interaction, as Slack POSTs it to our /slack/actions endpoint.
"""
from __future__ import annotations

import argparse
import base64
import copy
import email.policy
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from otel_ai.testing.loopback import (
    LoopbackFake,
    LoopbackHandler,
    LoopbackServer,
    serve_from_cli,
)

MAX_BODY_BYTES = 32 * 1024 * 1024
API_PREFIX = "/api/"

# Slack's documented limits, enforced so that our messages are rejected here as they would be there.
MAX_TEXT_CHARS = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT_CHARS = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT_CHARS = 2000
MAX_HEADER_TEXT_CHARS = 150
MAX_BLOCK_ID_CHARS = 255
MAX_ELEMENTS = {"actions": 25, "context": 10}

TEAM_ID = "T1"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"
AUTH_TEST = {"url": "https://fake.slack.com/", "team": "Fake", "user": "otel-ai", "team_id": TEAM_ID,
             "user_id": BOT_USER_ID, "bot_id": BOT_ID}


@dataclass
class SlackCall:
    method: str  # Web API method, e.g. "chat.postMessage"; the path for requests outside /api/
    args: dict[str, Any]  # query string overlaid by the body's arguments, `token` removed
    token: str | None
    status: int  # the HTTP status the fake answered
    response: dict[str, Any] | None
    at: float  # time.monotonic() when the request arrived


@dataclass
class Step:
    """A scripted answer for the next `times` calls to `method` (None: any method)."""

    method: str | None = None
    error: str | None = "internal_error"  # answer {"ok": false, "error": error}; None: answer normally
    status: int = 200
    times: int = 1
    delay_s: float = 0.0  # sleep before answering (for client timeouts)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class _RateLimit:
    until: float
    retry_after: int
    method: str | None


class _ApiError(Exception):
    def __init__(self, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail

    def reply(self) -> _Reply:
        payload: dict[str, Any] = {"ok": False, "error": self.error}
        if self.detail:
            payload["response_metadata"] = {"messages": [f"[ERROR] {self.detail}"]}
        return _Reply(200, payload)


class FakeSlack(LoopbackFake):
    MAX_RECORDED = 10_000

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = "xoxb-test",
                 signing_secret: str = "test-signing-secret") -> None:
        super().__init__(host, port)
        self.handler = _Handler
        self.thread_name = "fake-slack"
        self.token = token  # None: any token is accepted (a missing one still is not_authed)
        self.signing_secret = signing_secret
        self._lock = threading.Lock()
        self._calls: deque[SlackCall] = deque(maxlen=self.MAX_RECORDED)
        self._steps: deque[list[Any]] = deque()  # [step, calls still to answer]
        self._rate_limits: list[_RateLimit] = []
        self._down_until = 0.0
        # Insertion order is ts order: every ts is minted under the lock, increasing.
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._replies: dict[tuple[str, str], list[str]] = {}
        self._last_ts_micros = 0
        self._interaction_ids = itertools.count(1)
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": lambda args: dict(AUTH_TEST),
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._conversation_replies,
        }

    @property
    def url(self) -> str:
        """The base URL for slack_sdk's base_url and SLACK_API_URL, trailing slash included."""
        return f"{self.base_url}{API_PREFIX}"

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        """Queue scripted answers; a call consumes the first queued step for its method."""
        with self._lock:
            self._steps.extend([step, step.times] for step in steps if step.times > 0)

    def fail(self, method: str | None, error: str = "internal_error", status: int = 200, times: int = 1) -> None:
        """The next `times` calls to `method` (None: any) answer {"ok": false, "error": error} with `status`."""
        self.script(Step(method=method, error=error, status=status, times=times))

    def rate_limit(self, seconds: float, retry_after: int = 1, method: str | None = None) -> None:
        """For `seconds`, calls to `method` (None: any) answer 429 ratelimited with Retry-After."""
        with self._lock:
            self._rate_limits.append(_RateLimit(time.monotonic() + seconds, retry_after, method))

    def down(self, seconds: float) -> None:
        """For `seconds`, every request answers 503 service_unavailable."""
        with self._lock:
            self._down_until = max(self._down_until, time.monotonic() + seconds)

    def recover(self) -> None:
        """End every scripted failure, rate limit and outage now: Slack is back."""
        with self._lock:
            self._steps.clear()
            self._rate_limits.clear()
            self._down_until = 0.0

    # -- inspection --------------------------------------------------------------------------

    @property
    def calls(self) -> list[SlackCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[SlackCall]:
        return [call for call in self.calls if call.method == method]

    @property
    def messages(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(channel, ts) -> channel, ts, text, blocks, attachments, metadata, thread_ts, user, bot_id, edits."""
        with self._lock:
            return copy.deepcopy(self._messages)

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages of `channel`, oldest first."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages.values()
                    if m["channel"] == channel and m["thread_ts"] is None]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The replies in the thread of message `ts` (parent excluded), oldest first."""
        with self._lock:
            message = self._messages.get((channel, ts))
            if message is None:
                return []
            parent_ts = message["thread_ts"] or ts
            return [copy.deepcopy(self._messages[(channel, reply)])
                    for reply in self._replies.get((channel, parent_ts), [])]

    # -- interactivity -----------------------------------------------------------------------

    def signed_action(self, action_id: str, value: str, user_id: str = "U123", user_name: str = "alice",
                      channel: str = "C1", message_ts: str = "1.0", timestamp: int | None = None,
                      secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of a button click, as Slack POSTs a block_actions interaction."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        with self._lock:
            n = next(self._interaction_ids)
            stored = self._messages.get((channel, message_ts))
            message = (self._render(stored, with_metadata=False) if stored is not None
                       else {"type": "message", "ts": message_ts, "text": ""})
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": False},
            "trigger_id": f"{n}.{timestamp}.fakefakefake",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lstrip("#")},
            "message": message,
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{TEAM_ID}/{n}/fakefakefake",
            "actions": [{"action_id": action_id, "block_id": _block_of(message.get("blocks"), action_id),
                         "value": value, "type": "button", "action_ts": f"{timestamp}.{n:06d}"}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        key = (self.signing_secret if secret is None else secret).encode()
        digest = hmac.new(key, f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": f"v0={digest}",
        }
        return body, headers

    # -- answering ---------------------------------------------------------------------------

    def _call(self, path: str, headers: dict[str, str], raw: bytes, at: float,
              rejected: _Reply | None = None) -> _Reply:
        """Answer one request and record it."""
        route = urlsplit(path)
        authorization = headers.get("authorization", "")
        token = (authorization[7:].strip() or None) if authorization.lower().startswith("bearer ") else None
        args: dict[str, Any] = {}
        problem: _ApiError | None = None
        if not route.path.startswith(API_PREFIX):
            method = route.path
            rejected = rejected or _Reply(404, {"ok": False, "error": "not_found"})
        else:
            method = unquote(route.path[len(API_PREFIX):])
            try:
                args = _parse_args(route.query, headers.get("content-type", ""), raw)
            except _ApiError as exc:
                problem = exc
            supplied = args.pop("token", None)
            if token is None and isinstance(supplied, str) and supplied:
                token = supplied
        with self._lock:
            reply = rejected or self._answer(method, args, token, problem)
            self._calls.append(SlackCall(method, args, token, reply.status, reply.payload, at))
        self._echo(lambda: describe_call(method, args, reply.status, reply.payload))
        return reply

    def _answer(self, method: str, args: dict[str, Any], token: str | None, problem: _ApiError | None) -> _Reply:
        now = time.monotonic()
        if now < self._down_until:
            return _Reply(503, {"ok": False, "error": "service_unavailable"})
        handle = self._methods.get(method)
        if handle is None:
            return _ApiError("unknown_method").reply()
        if problem is not None:
            return problem.reply()
        if token is None:
            return _ApiError("not_authed").reply()
        if self.token is not None and token != self.token:
            return _ApiError("invalid_auth").reply()
        self._rate_limits = [limit for limit in self._rate_limits if limit.until > now]
        for limit in self._rate_limits:
            if limit.method in (None, method):
                return _Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(limit.retry_after)})
        step = self._next_step(method)
        if step is not None and step.error is not None:
            return _Reply(step.status, {"ok": False, "error": step.error}, dict(step.headers), step.delay_s)
        try:
            reply = _Reply(200, {"ok": True, **handle(args)})
        except _ApiError as exc:
            reply = exc.reply()
        if step is not None:
            reply.headers.update(step.headers)
            reply.delay_s = step.delay_s
        return reply

    def _next_step(self, method: str) -> Step | None:
        for entry in self._steps:
            step, left = entry
            if step.method in (None, method):
                if left <= 1:
                    self._steps.remove(entry)
                else:
                    entry[1] = left - 1
                return step
        return None

    def _next_ts(self) -> str:
        micros = max(time.time_ns() // 1000, self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    # The method handlers run under self._lock and raise _ApiError for Slack's error answers.

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        text, blocks, attachments = _content(args)
        if not text and not blocks and not attachments:
            raise _ApiError("no_text")
        metadata = _metadata(args)
        thread_ts = args.get("thread_ts")
        if thread_ts in (None, ""):
            thread_ts = None
        else:
            parent = self._messages.get((channel, str(thread_ts)))
            if parent is None:
                raise _ApiError("thread_not_found")
            # Slack threads a reply to a reply under the same parent.
            thread_ts = parent["thread_ts"] or parent["ts"]
        ts = self._next_ts()
        message = {"channel": channel, "ts": ts, "text": text or "", "blocks": blocks or None,
                   "attachments": attachments or None, "metadata": metadata, "thread_ts": thread_ts,
                   "user": BOT_USER_ID, "bot_id": BOT_ID, "edits": 0, "edited_ts": None}
        self._messages[(channel, ts)] = message
        if thread_ts is not None:
            self._replies.setdefault((channel, thread_ts), []).append(ts)
        return {"channel": channel, "ts": ts, "message": self._render(message, with_metadata=True)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        ts = args.get("ts")
        message = self._messages.get((channel, str(ts))) if ts not in (None, "") else None
        if message is None:
            raise _ApiError("message_not_found")
        text, blocks, attachments = _content(args)
        if text is None and blocks is None and attachments is None:
            raise _ApiError("no_text")
        metadata = _metadata(args)
        # Like Slack, an omitted field keeps its value and an empty list of blocks removes them.
        if text is not None:
            message["text"] = text
        if blocks is not None:
            message["blocks"] = blocks or None
        if attachments is not None:
            message["attachments"] = attachments or None
        if metadata is not None:
            message["metadata"] = metadata
        message["edits"] += 1
        message["edited_ts"] = self._next_ts()
        return {"channel": channel, "ts": message["ts"], "text": message["text"],
                "message": self._render(message, with_metadata=True)}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        limit = _int_arg(args, "limit", default=100, most=999)
        inclusive = _flag(args.get("inclusive"))
        oldest = _ts_arg(args.get("oldest"), "invalid_ts_oldest")
        latest = _ts_arg(args.get("latest"), "invalid_ts_latest")
        before = _cursor_ts(args.get("cursor"))
        found = []
        for message in reversed(self._messages.values()):
            if message["channel"] != channel or message["thread_ts"] is not None:
                continue
            ts = Decimal(message["ts"])
            if oldest is not None and (ts < oldest if inclusive else ts <= oldest):
                continue
            if latest is not None and (ts > latest if inclusive else ts >= latest):
                continue
            if before is not None and ts >= before:
                continue
            found.append(message)
        page = found[:limit]
        with_metadata = _flag(args.get("include_all_metadata"))
        answer: dict[str, Any] = {"messages": [self._render(m, with_metadata) for m in page],
                                  "has_more": len(found) > limit, "pin_count": 0}
        if answer["has_more"]:
            answer["response_metadata"] = {"next_cursor": _cursor_for(page[-1]["ts"])}
        return answer

    def _conversation_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        ts = args.get("ts")
        message = self._messages.get((channel, str(ts))) if ts not in (None, "") else None
        if message is None:
            raise _ApiError("thread_not_found")
        limit = _int_arg(args, "limit", default=1000, most=1000)
        parent_ts = message["thread_ts"] or message["ts"]
        thread = [self._messages[(channel, parent_ts)]]
        thread += [self._messages[(channel, reply)] for reply in self._replies.get((channel, parent_ts), [])]
        with_metadata = _flag(args.get("include_all_metadata"))
        return {"messages": [self._render(m, with_metadata) for m in thread[:limit]],
                "has_more": len(thread) > limit}

    def _render(self, message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        """A stored message as the Web API returns it."""
        out: dict[str, Any] = {"type": "message", "user": message["user"], "bot_id": message["bot_id"],
                               "app_id": APP_ID, "team": TEAM_ID, "text": message["text"], "ts": message["ts"]}
        for name in ("blocks", "attachments"):
            if message[name] is not None:
                out[name] = copy.deepcopy(message[name])
        if message["thread_ts"] is not None:
            out["thread_ts"] = message["thread_ts"]
            out["parent_user_id"] = self._messages[(message["channel"], message["thread_ts"])]["user"]
        replies = self._replies.get((message["channel"], message["ts"]))
        if replies:
            out.update(thread_ts=message["ts"], reply_count=len(replies), reply_users_count=1,
                       reply_users=[BOT_USER_ID], latest_reply=replies[-1])
        if message["edits"]:
            out["edited"] = {"user": message["user"], "ts": message["edited_ts"]}
        if with_metadata and message["metadata"] is not None:
            out["metadata"] = copy.deepcopy(message["metadata"])
        return out


# -- arguments --------------------------------------------------------------------------------


def _parse_args(query: str, content_type: str, raw: bytes) -> dict[str, Any]:
    """The query string's arguments overlaid by the body's."""
    try:
        args = _form_values(parse_qsl(query, keep_blank_values=True, errors="strict"))
    except (UnicodeError, ValueError):
        raise _ApiError("invalid_form_data") from None
    if not raw:
        return args
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(raw)
        except ValueError:
            raise _ApiError("invalid_json") from None
        if not isinstance(body, dict):
            raise _ApiError("invalid_json")
        args.update(body)
        return args
    try:
        if kind == "application/x-www-form-urlencoded":
            args.update(_form_values(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True,
                                               errors="strict")))
        elif kind == "multipart/form-data":
            args.update(_multipart_values(content_type, raw))
        else:
            raise ValueError(kind)
    except (UnicodeError, ValueError):
        raise _ApiError("invalid_form_data") from None
    return args


def _form_values(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {name: _json_or_text(value) for name, value in pairs}


def _json_or_text(value: str) -> Any:
    # Only objects and arrays (blocks, metadata, attachments): a ts like "1764000000.000100"
    # must stay a string, not become a float.
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _multipart_values(content_type: str, raw: bytes) -> dict[str, Any]:
    """What slack_sdk sends for api_call(data=...): text fields are parsed, files kept as bytes."""
    envelope = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    message = BytesParser(policy=email.policy.HTTP).parsebytes(envelope)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    values: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise ValueError("a multipart field without a name")
        data = part.get_payload(decode=True) or b""
        values[name] = data if part.get_filename() is not None else _json_or_text(data.decode())
    return values


def _channel(args: dict[str, Any]) -> str:
    channel = args.get("channel")
    if not isinstance(channel, str) or not channel:
        raise _ApiError("channel_not_found")
    return channel


def _maybe_json(value: Any) -> Any:
    # A JSON body may still carry blocks or metadata as a JSON string; Slack accepts both.
    return _json_or_text(value) if isinstance(value, str) else value


def _content(args: dict[str, Any]) -> tuple[str | None, list | None, list | None]:
    """text, blocks and attachments as given (None when absent), validated like Slack does."""
    text = args.get("text")
    text = None if text is None else str(text)
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise _ApiError("msg_too_long")
    blocks = _maybe_json(args.get("blocks"))
    blocks = None if blocks in (None, "") else blocks
    if blocks is not None:
        problem = _blocks_problem(blocks)
        if problem:
            raise _ApiError("invalid_blocks", problem)
        blocks = copy.deepcopy(blocks)
    attachments = _maybe_json(args.get("attachments"))
    attachments = None if attachments in (None, "") else attachments
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
            raise _ApiError("invalid_attachments")
        attachments = copy.deepcopy(attachments)
    return text, blocks, attachments


def _blocks_problem(blocks: Any) -> str | None:
    """Why Slack would reject these blocks, in its own message format; None if it would not."""
    if not isinstance(blocks, list):
        return "must be an array [json-pointer:/blocks]"
    if len(blocks) > MAX_BLOCKS:
        return f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"missing required field: type [json-pointer:{at}]"
        block_id = block.get("block_id")
        if block_id is not None and (not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID_CHARS):
            return f"must be a string of at most {MAX_BLOCK_ID_CHARS} characters [json-pointer:{at}/block_id]"
        kind = block["type"]
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                return f"must provide either text or fields [json-pointer:{at}]"
            if text is not None:
                problem = _text_problem(text, MAX_SECTION_TEXT_CHARS, f"{at}/text")
                if problem:
                    return problem
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                    return f"no more than {MAX_SECTION_FIELDS} items allowed [json-pointer:{at}/fields]"
                for j, item in enumerate(fields):
                    problem = _text_problem(item, MAX_FIELD_TEXT_CHARS, f"{at}/fields/{j}")
                    if problem:
                        return problem
        elif kind == "header":
            problem = _text_problem(block.get("text"), MAX_HEADER_TEXT_CHARS, f"{at}/text", plain_only=True)
            if problem:
                return problem
        elif kind in MAX_ELEMENTS:
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or len(elements) > MAX_ELEMENTS[kind]:
                return f"must be an array of 1 to {MAX_ELEMENTS[kind]} items [json-pointer:{at}/elements]"
    return None


def _text_problem(obj: Any, most: int, at: str, plain_only: bool = False) -> str | None:
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in kinds or not isinstance(obj.get("text"), str):
        return f"must be a text object of type {' or '.join(kinds)} [json-pointer:{at}]"
    if not obj["text"]:
        return f"must be more than 0 characters [json-pointer:{at}/text]"
    if len(obj["text"]) > most:
        return f"must be less than {most + 1} characters [json-pointer:{at}/text]"
    return None


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    metadata = _maybe_json(args.get("metadata"))
    if metadata in (None, ""):
        return None
    if (not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str)
            or not metadata["event_type"] or not isinstance(metadata.get("event_payload"), dict)):
        raise _ApiError("invalid_metadata_format")
    return {"event_type": metadata["event_type"], "event_payload": copy.deepcopy(metadata["event_payload"])}


def _flag(value: Any) -> bool:
    # slack_sdk sends booleans in query strings and forms as "1"/"0".
    return value is True or (isinstance(value, (int, str)) and str(value).lower() in ("1", "true"))


def _int_arg(args: dict[str, Any], name: str, default: int, most: int) -> int:
    value = args.get(name)
    if value in (None, "", 0, "0"):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _ApiError("invalid_arguments", f"{name} must be an integer") from None
    return max(1, min(number, most))


def _ts_arg(value: Any, error: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        ts = Decimal(str(value))
    except InvalidOperation:
        raise _ApiError(error) from None
    if not ts.is_finite():
        raise _ApiError(error)
    return ts


def _cursor_for(ts: str) -> str:
    # The shape of Slack's own history cursors: base64 of "next_ts:<ts without the dot>".
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _cursor_ts(cursor: Any) -> Decimal | None:
    if cursor in (None, ""):
        return None
    try:
        decoded = base64.b64decode(str(cursor), validate=True).decode()
        digits = decoded.removeprefix("next_ts:")
        if not decoded.startswith("next_ts:") or not digits.isdigit() or len(digits) <= 6:
            raise ValueError(decoded)
        return Decimal(f"{digits[:-6]}.{digits[-6:]}")
    except ValueError:
        raise _ApiError("invalid_cursor") from None


def _block_of(blocks: Any, action_id: str) -> str:
    """The block_id of the block holding the element `action_id`, as Slack reports it."""
    for block in blocks or []:
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        if any(isinstance(e, dict) and e.get("action_id") == action_id for e in elements):
            return str(block.get("block_id") or "actions")
    return "actions"


# -- HTTP -------------------------------------------------------------------------------------


class _Handler(LoopbackHandler):
    server: LoopbackServer

    def _serve(self) -> None:
        at = time.monotonic()
        headers = {name.lower(): value for name, value in self.headers.items()}
        raw, rejected = b"", None
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if "chunked" in headers.get("transfer-encoding", "").lower() or length < 0:
            rejected = _Reply(400, {"ok": False, "error": "invalid_form_data"})
        elif length > MAX_BODY_BYTES:
            rejected = _Reply(413, {"ok": False, "error": "request_too_large"})
        else:
            raw = self.rfile.read(length)
        if rejected is not None:
            # The unread body would be taken for the next request on this connection.
            self.close_connection = True
        reply = self.server.fake._call(self.path, headers, raw, at, rejected)
        if reply.delay_s > 0 and self.server.stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        body = json.dumps(reply.payload).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def describe_call(method: str, args: dict[str, Any], status: int, payload: dict[str, Any]) -> str:
    """One line for a person watching the fake: method, where, what, and the answer."""
    where = " ".join(str(args[k]) for k in ("channel", "ts", "thread_ts") if args.get(k))
    text = " ".join(str(args.get("text") or "").split())
    answer = "ok" if payload.get("ok") else f"error {payload.get('error')}"
    return f"{method} {where} {text[:100]!r} -> {status} {answer}".replace("  ", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.fake_slack",
                                     description="Serve a fake Slack Web API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788, help="0 picks a free port; the URL printed has it")
    parser.add_argument("--token", default="xoxb-test", help="answer invalid_auth to any other token; '' accepts any")
    parser.add_argument("--signing-secret", default="test-signing-secret")
    args = parser.parse_args(argv)
    fake = FakeSlack(args.host, args.port, token=args.token or None, signing_secret=args.signing_secret)
    return serve_from_cli(fake, lambda: f"fake Slack API on {fake.url} (export SLACK_API_URL={fake.url})")


if __name__ == "__main__":
    raise SystemExit(main())
