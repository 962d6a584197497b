"""The loopback Anthropic fake, driven through the real `anthropic` SDK as otel-ai drives it."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import anthropic
import pytest

from otel_ai.analysis.schema import AnalysisAnswer
from otel_ai.testing.fake_anthropic import (
    MAX_BODY_BYTES,
    FakeAnthropic,
    Step,
    sample_answer,
)

MODEL = "claude-haiku-5-5"
PROMPT = "Why is POST /checkout failing since 10:02?"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


# One transport for all clients: building each client's own TLS context costs ~40 ms.
HTTP = anthropic.DefaultHttpxClient()


def client_for(fake: FakeAnthropic | str, api_key: str | None = "test-key", **options: object) -> anthropic.Anthropic:
    options.setdefault("max_retries", 0)
    url = fake if isinstance(fake, str) else fake.url
    return anthropic.Anthropic(api_key=api_key, base_url=url, http_client=HTTP, **options)


def ask(client: anthropic.Anthropic, prompt: str = PROMPT, **params: object) -> anthropic.types.Message:
    return client.messages.create(model=MODEL, max_tokens=1024,
                                  messages=[{"role": "user", "content": prompt}], **params)


def post_raw(fake: FakeAnthropic, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    sent = {"content-type": "application/json", "x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    sent.update(headers or {})
    request = urllib.request.Request(fake.url + path, data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_default_answer_is_a_schema_valid_analysis_and_the_request_is_recorded(fake: FakeAnthropic) -> None:
    response = ask(client_for(fake), system="You are an SRE.")

    answer = AnalysisAnswer.model_validate_json(response.content[0].text)
    assert answer.model_dump(mode="json") == AnalysisAnswer.model_validate(sample_answer()).model_dump(mode="json")
    assert response.model == MODEL and response.id == "msg_fake_1" and response.stop_reason == "end_turn"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response._request_id.startswith("req_fake_")
    [recorded] = fake.messages_requests()
    assert recorded.body is not None
    assert (recorded.body["model"], recorded.body["max_tokens"]) == (MODEL, 1024)
    assert PROMPT in recorded.text() and "You are an SRE." in recorded.text()
    # anthropic 2.x sends the key as a bearer token
    assert recorded.headers["authorization"] == "Bearer test-key" and "anthropic-version" in recorded.headers


def test_scripted_steps_are_consumed_in_order_then_the_default_text(fake: FakeAnthropic) -> None:
    usage = {"input_tokens": 1234, "output_tokens": 56, "cache_creation_input_tokens": 7,
             "cache_read_input_tokens": 8}
    fake.script(FakeAnthropic.answer({"n": 1}, usage=usage), FakeAnthropic.answer("second", stop_reason="max_tokens"))
    client = client_for(fake)

    first, second, third = ask(client), ask(client), ask(client)

    assert json.loads(first.content[0].text) == {"n": 1}
    assert first.usage.model_dump(include=set(usage)) == usage
    assert (second.content[0].text, second.stop_reason) == ("second", "max_tokens")
    assert third.content[0].text == json.dumps(sample_answer())
    assert [r.body["messages"][0]["content"] for r in fake.messages_requests()] == [PROMPT] * 3


def test_default_text_replaces_the_sample_answer() -> None:
    with FakeAnthropic(default_text="plain words") as fake:
        assert ask(client_for(fake)).content[0].text == "plain words"


def test_text_collects_system_blocks_and_nested_message_content(fake: FakeAnthropic) -> None:
    client_for(fake).messages.create(
        model=MODEL, max_tokens=64,
        system=[{"type": "text", "text": "system one"}, {"type": "text", "text": "system two"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "user block"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "q", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "tool output"}]},
        ])

    text = fake.messages_requests()[0].text()
    assert all(part in text for part in ("system one", "system two", "user block", "tool output"))


def test_rate_limit_carries_retry_after_to_the_sdk(fake: FakeAnthropic) -> None:
    fake.script(FakeAnthropic.error(429, message="slow down", retry_after=1))

    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client_for(fake))

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert caught.value.request_id.startswith("req_fake_")


@pytest.mark.parametrize(("status", "error_class", "error_type"), [
    (529, anthropic.OverloadedError, "overloaded_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (400, anthropic.BadRequestError, "invalid_request_error"),
])
def test_scripted_errors_map_to_the_sdk_error_classes(fake: FakeAnthropic, status: int,
                                                      error_class: type[anthropic.APIStatusError],
                                                      error_type: str) -> None:
    fake.script(FakeAnthropic.error(status))

    with pytest.raises(error_class) as caught:
        ask(client_for(fake))

    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type


def test_sdk_retries_a_rate_limit_and_then_succeeds(fake: FakeAnthropic) -> None:
    fake.script(FakeAnthropic.error(429, retry_after=0.01), FakeAnthropic.answer("after retry"))

    response = ask(client_for(fake, max_retries=2))

    assert response.content[0].text == "after retry"
    assert len(fake.messages_requests()) == 2


def test_a_delay_longer_than_the_client_timeout_is_a_timeout(fake: FakeAnthropic) -> None:
    fake.script(FakeAnthropic.answer("too late", delay_s=2.0))
    started = time.monotonic()

    with pytest.raises(anthropic.APITimeoutError):
        ask(client_for(fake, timeout=0.3))

    assert time.monotonic() - started < 1.5


def test_stop_is_prompt_while_an_answer_is_delayed() -> None:
    fake = FakeAnthropic().start()
    fake.script(Step(text="never", delay_s=30))
    client = client_for(fake, timeout=10)
    failures: list[BaseException] = []
    caller = threading.Thread(target=lambda: _capture(failures, lambda: ask(client)))
    caller.start()
    while not fake.messages_requests():
        time.sleep(0.01)

    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)

    assert time.monotonic() - started < 1.0
    assert len(failures) == 1 and isinstance(failures[0], anthropic.APIConnectionError)


def _capture(failures: list[BaseException], call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever the caller saw
        failures.append(exc)


def test_a_configured_key_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with FakeAnthropic(api_key="right-key") as fake:
        fake.script(FakeAnthropic.answer("for the right key"))
        with pytest.raises(anthropic.AuthenticationError) as caught:
            ask(client_for(fake, api_key="wrong-key"))
        assert caught.value.body["error"]["type"] == "authentication_error"

        status, body = post_raw(fake, "/v1/messages", json.dumps(
            {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"x-api-key": ""})
        assert (status, body["error"]["type"]) == (401, "authentication_error")

        # Both rejected requests left the scripted answer for this one; x-api-key is accepted.
        status, body = post_raw(fake, "/v1/messages", json.dumps(
            {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"x-api-key": "right-key"})
        assert status == 200 and body["content"][0]["text"] == "for the right key"

        # So is a bearer token (what anthropic 2.x sends for api_key= as well as auth_token=).
        bearer = client_for(fake, api_key=None, auth_token="right-key")
        assert ask(bearer).content[0].text == json.dumps(sample_answer())


def test_missing_anthropic_version_is_rejected(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    status, answer = post_raw(fake, "/v1/messages", json.dumps(body).encode(), headers={"anthropic-version": ""})
    assert (status, answer["error"]["message"]) == (401, "anthropic-version header is required")


def test_models_retrieve_knows_claude_ids_only(fake: FakeAnthropic) -> None:
    client = client_for(fake)

    model = client.models.retrieve(MODEL)

    assert (model.id, model.display_name, model.type) == (MODEL, MODEL, "model")
    assert model.created_at.year == 2026
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-4o")
    request = urllib.request.Request(f"{fake.url}/v1/models/{MODEL}", headers={"anthropic-version": "2023-06-01"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401


def test_prompt_caching_creates_then_reads_the_marked_system_prefix(fake: FakeAnthropic) -> None:
    client = client_for(fake)
    system = [{"type": "text", "text": "You are an incident responder. " * 40, "cache_control": {"type": "ephemeral"}}]

    first = ask(client, system=system)
    second = ask(client, system=system, prompt="And now?")
    uncached = ask(client, system=[{"type": "text", "text": "You are an incident responder. " * 40}])

    assert first.usage.cache_creation_input_tokens == len(system[0]["text"]) // 4 > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == len(system[0]["text"]) // 4
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens < uncached.usage.input_tokens
    assert (uncached.usage.cache_creation_input_tokens, uncached.usage.cache_read_input_tokens) == (0, 0)


def test_count_tokens_and_unknown_routes(fake: FakeAnthropic) -> None:
    client = client_for(fake)

    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": PROMPT}])

    assert counted.input_tokens == len(json.dumps(fake.requests[-1].body)) // 4 > 0
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.get("/v1/unknown", cast_to=object)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert fake.messages_requests() == []


@pytest.mark.parametrize(("body", "complaint"), [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (json.dumps({"model": MODEL, "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}).encode(),
     "max_tokens"),
    (json.dumps({"model": MODEL, "max_tokens": 5, "messages": []}).encode(), "messages"),
    (json.dumps({"model": MODEL, "max_tokens": 5, "stream": True,
                 "messages": [{"role": "user", "content": "x"}]}).encode(), "streaming not supported"),
])
def test_invalid_bodies_are_400_and_the_fake_keeps_serving(fake: FakeAnthropic, body: bytes, complaint: str) -> None:
    fake.script(FakeAnthropic.answer("still here"))

    status, answer = post_raw(fake, "/v1/messages", body)

    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error" and complaint in answer["error"]["message"]
    assert fake.requests[-1].raw == body
    assert ask(client_for(fake)).content[0].text == "still here"


def test_an_oversized_body_is_413_without_being_read(fake: FakeAnthropic) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), timeout=5)
    connection.putrequest("POST", "/v1/messages")
    connection.putheader("content-length", str(MAX_BODY_BYTES + 1))
    connection.endheaders()

    response = connection.getresponse()

    assert response.status == 413 and json.loads(response.read())["error"]["type"] == "request_too_large"
    connection.close()
    assert ask(client_for(fake)).content[0].text == json.dumps(sample_answer())


def test_concurrent_requests_each_take_one_step(fake: FakeAnthropic) -> None:
    fake.script(*(FakeAnthropic.answer(f"answer {i}") for i in range(16)))
    client = client_for(fake)
    texts: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        text = ask(client).content[0].text
        with lock:
            texts.append(text)

    callers = [threading.Thread(target=call) for _ in range(16)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=5)

    assert sorted(texts) == sorted(f"answer {i}" for i in range(16))


def test_recorded_requests_are_bounded() -> None:
    class SmallFake(FakeAnthropic):
        MAX_RECORDED = 3

    with SmallFake() as fake:
        client = client_for(fake)
        for i in range(5):
            ask(client, prompt=f"prompt {i}")
        assert [r.text() for r in fake.requests] == ["prompt 2", "prompt 3", "prompt 4"]


def test_the_server_is_quiet(fake: FakeAnthropic, capfd: pytest.CaptureFixture[str]) -> None:
    fake.script(FakeAnthropic.error(500))
    client = client_for(fake)
    with pytest.raises(anthropic.InternalServerError):
        ask(client)
    ask(client)
    post_raw(fake, "/v1/messages", b"{")

    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_module_entry_point_serves_the_sdk() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_ai.testing.fake_anthropic", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("fake Anthropic API on http://127.0.0.1:"), line
        url = line.split()[4]
        assert f"(export ANTHROPIC_BASE_URL={url})" in line and not url.endswith(":0")

        AnalysisAnswer.model_validate_json(ask(client_for(url, api_key="cli-key")).content[0].text)
        with pytest.raises(anthropic.AuthenticationError):
            ask(client_for(url, api_key="other"))
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr
