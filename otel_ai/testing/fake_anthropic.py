"""A loopback fake of the Anthropic Messages HTTP API, because Claude cannot be reached from here.

Tests and users point the real `anthropic` SDK at it, so the SDK's own retries, timeouts,
error classes and usage parsing run unchanged against real HTTP:

    python -m otel_ai.testing.fake_anthropic --port 8787 [--api-key K]
    export ANTHROPIC_BASE_URL=http://127.0.0.1:8787      # then run otel-ai as usual

or, in a test:

    with FakeAnthropic() as fake:
        fake.script(FakeAnthropic.error(429, retry_after=0.01), FakeAnthropic.answer({...}))
        client = anthropic.Anthropic(api_key="test-key", base_url=fake.url)
        ...
        assert "checkout" in fake.messages_requests()[-1].text()

Each valid POST /v1/messages consumes the next scripted Step; with the script empty it
answers `default_text`, or else `sample_answer()` (a schema-valid AnalysisAnswer). Requests
rejected before that (authentication, validation) do not consume a step. Every request is
recorded, the last 10 000 kept. Also served: POST /v1/messages/count_tokens and
GET /v1/models/{id}; anything else is 404. Streaming is not supported.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from otel_ai.testing.loopback import (
    LoopbackFake,
    LoopbackHandler,
    LoopbackServer,
    serve_from_cli,
)

MAX_BODY_BYTES = 32 * 1024 * 1024
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
MODELS = "/v1/models/"

DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def sample_answer() -> dict[str, Any]:
    """The built-in answer: valid against otel_ai.analysis.schema.AnalysisAnswer."""
    return {
        # Marked as fake so that nobody mistakes a notification from a fake-backed run for a real analysis.
        "summary": "[fake Anthropic API] POST /checkout errors rose right after checkout v2.3.1 rolled out.",
        "enough_evidence": True,
        "hypotheses": [
            {
                "hypothesis": "The checkout v2.3.1 rollout introduced the errors.",
                "verdict": "supported",
                "evidence": ["error rate rose within two minutes of the rollout", "only v2.3.1 pods return 500"],
            },
            {
                "hypothesis": "The payments dependency is failing.",
                "verdict": "contradicted",
                "evidence": ["payments latency and error rate are at baseline"],
            },
        ],
        "root_causes": [
            {
                "cause": "checkout v2.3.1 on the checkout-7d9f pods",
                "probability": 80,
                "evidence": ["only v2.3.1 pods return 500"],
            }
        ],
        "actions": ["Roll checkout back to v2.3.0.", "Diff the /checkout handler between v2.3.0 and v2.3.1."],
        "rollback_needed": True,
        "rollback_reasoning": "The errors are confined to the new version and started with its rollout.",
        "user_impact": "About 12% of checkout attempts fail with HTTP 500.",
        "confidence": 80,
    }


@dataclass
class RecordedRequest:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # lower-cased names
    body: dict | None  # parsed JSON object; None if the body is not one
    raw: bytes
    received_at: float  # time.monotonic()

    def text(self) -> str:
        """All text the request carries: system blocks + message contents, joined (so tests can grep it)."""
        if self.body is None:
            return ""
        parts: list[str] = []
        _collect_text(self.body.get("system"), parts)
        for message in self.body.get("messages") or []:
            if isinstance(message, dict):
                _collect_text(message.get("content"), parts)
        return "\n".join(parts)


def _collect_text(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, parts)
    elif isinstance(value, dict):
        if isinstance(value.get("text"), str):
            parts.append(value["text"])
        # tool_result blocks nest their own content
        _collect_text(value.get("content"), parts)


@dataclass
class Step:
    """One scripted answer for one POST /v1/messages."""

    status: int = 200
    text: str | None = None  # assistant text for 200 answers; None -> the fake's default text
    usage: dict | None = None  # replaces the computed usage object
    stop_reason: str = "end_turn"
    delay_s: float = 0.0  # sleep before answering (for timeouts)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "1"}
    error_type: str | None = None  # for non-200; None -> the usual type for the status
    message: str = ""


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def _error(status: int, error_type: str | None, message: str, headers: dict[str, str] | None = None,
           delay_s: float = 0.0) -> _Reply:
    error_type = error_type or default_error_type(status)
    body = {"type": "error", "error": {"type": error_type, "message": message or f"fake {error_type}"}}
    return _Reply(status, body, dict(headers or {}), delay_s)


def default_error_type(status: int) -> str:
    return DEFAULT_ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class FakeAnthropic(LoopbackFake):
    MAX_RECORDED = 10_000

    def __init__(self, host: str = "127.0.0.1", port: int = 0, default_text: str | None = None,
                 api_key: str | None = None) -> None:
        super().__init__(host, port)
        self.handler = _Handler
        self.thread_name = "fake-anthropic"
        self.default_text = default_text if default_text is not None else json.dumps(sample_answer())
        self.api_key = api_key
        self._lock = threading.Lock()
        self._script: deque[Step] = deque()
        self._requests: deque[RecordedRequest] = deque(maxlen=self.MAX_RECORDED)
        self._cached_prefixes: set[str] = set()
        self._request_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"{self.base_url}"

    # -- scripting and inspection ------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        with self._lock:
            self._script.extend(steps)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def messages_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and urlsplit(r.path).path == MESSAGES]

    @staticmethod
    def answer(payload: dict | str, usage: dict | None = None, delay_s: float = 0.0,
               stop_reason: str = "end_turn") -> Step:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return Step(text=text, usage=usage, delay_s=delay_s, stop_reason=stop_reason)

    @staticmethod
    def error(status: int, error_type: str | None = None, message: str = "", retry_after: float | None = None,
              delay_s: float = 0.0) -> Step:
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return Step(status=status, error_type=error_type or default_error_type(status), message=message,
                    delay_s=delay_s, headers=headers)

    # -- answering ---------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> str:
        with self._lock:
            self._requests.append(request)
            return f"req_fake_{next(self._request_ids):06d}"

    def _answer(self, request: RecordedRequest) -> _Reply:
        route = urlsplit(request.path).path
        if request.method == "POST" and route == MESSAGES:
            handle = self._messages
        elif request.method == "POST" and route == COUNT_TOKENS:
            handle = self._count_tokens
        elif request.method == "GET" and route.startswith(MODELS) and len(route) > len(MODELS):
            handle = self._model
        else:
            return _error(404, "not_found_error", f"{request.method} {route}: not found")
        problem = self._auth_problem(request.headers)
        if problem:
            return _error(401, "authentication_error", problem)
        return handle(request)

    def _auth_problem(self, headers: dict[str, str]) -> str | None:
        # anthropic 2.x sends even api_key= as a bearer token; curl users and older clients send x-api-key.
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        presented = [key for key in (headers.get("x-api-key", ""), bearer) if key]
        if not presented:
            return "x-api-key header is required"
        if self.api_key is not None and self.api_key not in presented:
            return "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return "anthropic-version header is required"
        return None

    def _messages(self, request: RecordedRequest) -> _Reply:
        body = request.body
        if body is None:
            return _error(400, "invalid_request_error", _body_problem(request.raw))
        if body.get("stream"):
            return _error(400, "invalid_request_error", "streaming not supported by the fake")
        problem = _messages_problem(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        with self._lock:
            step = self._script.popleft() if self._script else Step()
            message_id = f"msg_fake_{next(self._message_ids)}"
        if step.status != 200:
            return _error(step.status, step.error_type, step.message, step.headers, step.delay_s)
        text = step.text if step.text is not None else self.default_text
        payload = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": step.stop_reason,
            "stop_sequence": None,
            "usage": dict(step.usage) if step.usage is not None else self._usage(body, text),
        }
        return _Reply(200, payload, dict(step.headers), step.delay_s)

    def _usage(self, body: dict, text: str) -> dict[str, int]:
        input_tokens = max(1, len(json.dumps([body.get("system"), body["messages"]])) // 4)
        created = read = 0
        cached = _cached_prefix(body)
        if cached is not None:
            key, tokens = cached
            with self._lock:
                seen = key in self._cached_prefixes
                self._cached_prefixes.add(key)
            if seen:
                read = tokens
            else:
                created = tokens
            input_tokens = max(1, input_tokens - tokens)
        return {
            "input_tokens": input_tokens,
            "output_tokens": max(1, len(text) // 4),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        }

    def _count_tokens(self, request: RecordedRequest) -> _Reply:
        if request.body is None:
            return _error(400, "invalid_request_error", _body_problem(request.raw))
        return _Reply(200, {"input_tokens": len(json.dumps(request.body)) // 4})

    def _model(self, request: RecordedRequest) -> _Reply:
        model_id = unquote(urlsplit(request.path).path[len(MODELS):])
        if not model_id.startswith("claude-") or "/" in model_id:
            return _error(404, "not_found_error", f"model: {model_id}")
        return _Reply(200, {"type": "model", "id": model_id, "display_name": model_id,
                            "created_at": "2026-01-01T00:00:00Z", "lifecycle": "active"})


def _body_problem(raw: bytes) -> str:
    if not raw:
        return "a JSON request body is required"
    try:
        json.loads(raw)
    except ValueError as exc:
        return f"malformed JSON body: {exc}"
    return "the request body must be a JSON object"


def _messages_problem(body: dict) -> str | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required (a non-empty string)"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: Field required (a non-empty list)"
    return None


def _cached_prefix(body: dict) -> tuple[str, int] | None:
    """The cache key and token count of the system prefix up to its last cache_control block."""
    system = body.get("system")
    if not isinstance(system, list):
        return None
    marked = [i for i, block in enumerate(system) if isinstance(block, dict) and block.get("cache_control")]
    if not marked:
        return None
    prefix = system[: marked[-1] + 1]
    tokens = max(1, sum(len(str(block.get("text", ""))) for block in prefix if isinstance(block, dict)) // 4)
    # Like the real cache, a hit needs the same model and the same tools ahead of the system prompt.
    key_material = json.dumps([body.get("model"), body.get("tools"), prefix], sort_keys=True)
    return hashlib.sha256(key_material.encode()).hexdigest(), tokens


class _Handler(LoopbackHandler):
    server: LoopbackServer

    def _serve(self) -> None:
        received_at = time.monotonic()
        headers = {name.lower(): value for name, value in self.headers.items()}
        raw, reply = b"", None
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if "chunked" in headers.get("transfer-encoding", "").lower() or length < 0:
            reply = _error(400, "invalid_request_error", "the fake needs a valid content-length")
        elif length > MAX_BODY_BYTES:
            reply = _error(413, "request_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
        else:
            raw = self.rfile.read(length)
        if reply is not None:
            # The unread body would be taken for the next request on this connection.
            self.close_connection = True
        request = RecordedRequest(self.command, self.path, headers, _json_object(raw), raw, received_at)
        fake = self.server.fake
        request_id = fake._record(request)
        if reply is None:
            reply = fake._answer(request)
        fake._echo(lambda: describe_call(request, reply))
        if reply.delay_s > 0 and self.server.stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        self._write(reply, request_id)

    def _write(self, reply: _Reply, request_id: str) -> None:
        body = json.dumps(reply.payload).encode()
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Overloaded" if reply.status == 529 else "Error"
        self.send_response(reply.status, reason)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", request_id)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)


def describe_call(request: RecordedRequest, reply: _Reply) -> str:
    """One line for a person watching the fake: what was asked, and what it answered."""
    body = request.body or {}
    usage = reply.payload.get("usage") or {}
    tokens = f" ({usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens)" if usage else ""
    error = (reply.payload.get("error") or {}).get("type")
    return (f"{request.method} {urlsplit(request.path).path} model={body.get('model', '?')} -> {reply.status}"
            f"{' ' + error if error else ''}{tokens}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.fake_anthropic",
                                     description="Serve a fake Anthropic Messages API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port; the URL printed has it")
    parser.add_argument("--api-key", default=None, help="answer 401 to requests carrying any other key")
    args = parser.parse_args(argv)
    fake = FakeAnthropic(args.host, args.port, api_key=args.api_key)
    return serve_from_cli(fake, lambda: f"fake Anthropic API on {fake.url} (export ANTHROPIC_BASE_URL={fake.url})")


if __name__ == "__main__":
    raise SystemExit(main())
