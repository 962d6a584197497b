"""The loopback Slack fake, driven through the real `slack_sdk.WebClient` as otel-ai drives it."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from otel_ai.testing.fake_slack import FakeSlack, Step

CHANNEL = "#incidents"
METADATA = {"event_type": "otel_ai_incident", "event_payload": {"incident_id": "inc_0123456789abcdef"}}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def client_for(fake: FakeSlack | str, token: str | None = "xoxb-test", **options: object) -> WebClient:
    url = fake if isinstance(fake, str) else fake.url
    options.setdefault("timeout", 5)
    return WebClient(token=token, base_url=url, **options)  # type: ignore[arg-type]


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def api_error(call: object) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def post_raw(fake: FakeSlack, method: str, body: bytes, content_type: str, query: str = "") -> tuple[int, dict]:
    headers = {"Content-Type": content_type, "Authorization": "Bearer xoxb-test"}
    url = fake.url + method + (f"?{query}" if query else "")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_post_then_update_changes_the_message_and_history_shows_metadata_only_when_asked(fake: FakeSlack) -> None:
    client = client_for(fake)
    assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/api/")

    posted = client.chat_postMessage(channel=CHANNEL, text="checkout errors", blocks=[section("*checkout*")],
                                     metadata=METADATA)
    ts = posted["ts"]
    assert posted["channel"] == CHANNEL and posted["message"]["text"] == "checkout errors"
    assert posted["message"]["metadata"] == METADATA and posted["message"]["bot_id"] == "B0BOT"

    updated = client.chat_update(channel=CHANNEL, ts=ts, text="checkout errors (acknowledged)",
                                 blocks=[section("*acked*")])
    assert (updated["ts"], updated["text"]) == (ts, "checkout errors (acknowledged)")
    stored = fake.messages[(CHANNEL, ts)]
    assert stored["text"] == "checkout errors (acknowledged)" and stored["edits"] == 1
    assert stored["blocks"] == [section("*acked*")] and stored["metadata"] == METADATA  # omitted fields kept

    [with_metadata] = client.conversations_history(channel=CHANNEL, include_all_metadata=True)["messages"]
    assert with_metadata["metadata"] == METADATA and with_metadata["ts"] == ts and "edited" in with_metadata
    [without] = client.conversations_history(channel=CHANNEL)["messages"]
    assert "metadata" not in without and without["text"] == "checkout errors (acknowledged)"

    assert api_error(lambda: client.chat_update(channel=CHANNEL, ts="1.000001", text="x")).response["error"] \
        == "message_not_found"
    assert [call.method for call in fake.calls] == ["chat.postMessage", "chat.update", "conversations.history",
                                                   "conversations.history", "chat.update"]
    first = fake.calls_to("chat.postMessage")[0]
    assert first.token == "xoxb-test" and first.args["metadata"] == METADATA and first.status == 200
    assert first.response is not None and first.response["ts"] == ts


def test_history_is_newest_first_and_pages_with_a_cursor(fake: FakeSlack) -> None:
    client = client_for(fake)
    posted = [client.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"] for i in range(5)]
    client.chat_postMessage(channel="#other", text="elsewhere")

    first = client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["ts"] for m in first["messages"]] == posted[:2:-1] and first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    rest = client.conversations_history(channel=CHANNEL, limit=10, cursor=cursor)
    assert [m["ts"] for m in rest["messages"]] == posted[2::-1] and rest["has_more"] is False
    since = client.conversations_history(channel=CHANNEL, oldest=posted[2])
    assert [m["ts"] for m in since["messages"]] == posted[:2:-1]  # oldest is exclusive, like Slack
    assert [m["text"] for m in fake.channel_messages(CHANNEL)] == [f"m{i}" for i in range(5)]
    assert api_error(lambda: client.conversations_history(channel=CHANNEL, cursor="bogus")).response["error"] \
        == "invalid_cursor"


def test_thread_replies_are_stored_and_listed_and_an_unknown_thread_is_rejected(fake: FakeSlack) -> None:
    client = client_for(fake)
    parent = client.chat_postMessage(channel=CHANNEL, text="incident opened")["ts"]
    first = client.chat_postMessage(channel=CHANNEL, text="analysis", thread_ts=parent)
    second = client.chat_postMessage(channel=CHANNEL, text="rolled back", thread_ts=first["ts"])
    assert first["message"]["thread_ts"] == parent and second["message"]["thread_ts"] == parent

    assert [m["text"] for m in fake.thread(CHANNEL, parent)] == ["analysis", "rolled back"]
    assert [m["text"] for m in fake.channel_messages(CHANNEL)] == ["incident opened"]  # replies are not top-level
    replies = client.conversations_replies(channel=CHANNEL, ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["incident opened", "analysis", "rolled back"]
    assert replies[0]["reply_count"] == 2 and replies[0]["latest_reply"] == second["ts"]
    assert replies[1]["parent_user_id"] == "U0BOT"

    for bad in ("1.000001", parent + "9"):
        error = api_error(lambda bad=bad: client.chat_postMessage(channel=CHANNEL, text="x", thread_ts=bad))
        assert error.response["error"] == "thread_not_found"
    # a thread_ts only counts in its own channel
    error = api_error(lambda: client.chat_postMessage(channel="#other", text="x", thread_ts=parent))
    assert error.response["error"] == "thread_not_found"
    assert len(fake.messages) == 3


def test_auth_test_and_auth_errors(fake: FakeSlack) -> None:
    identity = client_for(fake).auth_test()
    assert (identity["user_id"], identity["bot_id"], identity["team_id"]) == ("U0BOT", "B0BOT", "T1")

    assert api_error(client_for(fake, token="xoxb-other").auth_test).response["error"] == "invalid_auth"
    error = api_error(lambda: client_for(fake, token=None).chat_postMessage(channel=CHANNEL, text="x"))
    assert error.response["error"] == "not_authed" and error.response.status_code == 200
    assert fake.messages == {}
    assert [call.token for call in fake.calls] == ["xoxb-test", "xoxb-other", None]

    with FakeSlack(token=None) as any_token:
        assert client_for(any_token, token="xoxb-whatever").auth_test()["ok"] is True
        assert api_error(client_for(any_token, token=None).auth_test).response["error"] == "not_authed"


# slack_sdk itself warns before sending a message without text, which is the point of one case here.
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_slack_limits_on_blocks_and_text(fake: FakeSlack) -> None:
    client = client_for(fake)

    def error_of(**kwargs: object) -> str:
        return api_error(lambda: client.chat_postMessage(channel=CHANNEL, **kwargs)).response["error"]

    assert error_of(text="x", blocks=[section("b")] * 51) == "invalid_blocks"
    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="x", blocks=[section("s" * 3001)]))
    assert error.response["error"] == "invalid_blocks"
    assert "/blocks/0/text" in error.response["response_metadata"]["messages"][0]
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert error_of(text="x", blocks=[header]) == "invalid_blocks"
    assert error_of(text="t" * 40_001) == "msg_too_long"
    assert error_of(text="") == "no_text"
    assert error_of(text="x", metadata={"event_type": "x"}) == "invalid_metadata_format"
    assert api_error(lambda: client.chat_postMessage(channel="", text="x")).response["error"] == "channel_not_found"
    assert fake.messages == {}

    # exactly at the limits is accepted
    header["text"]["text"] = "h" * 150
    client.chat_postMessage(channel=CHANNEL, text="t" * 40_000, blocks=[header] + [section("s" * 3000)] * 49)
    [message] = fake.messages.values()
    assert len(message["blocks"]) == 50
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        client.chat_update(channel=CHANNEL, ts=message["ts"], blocks=[section("b")] * 51)
    assert fake.messages[(CHANNEL, message["ts"])]["edits"] == 0


def test_scripted_failure_answers_once_then_the_call_succeeds(fake: FakeSlack) -> None:
    client = client_for(fake)
    fake.fail("chat.postMessage", "internal_error", status=500)

    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="first"))
    assert error.response.status_code == 500 and error.response["error"] == "internal_error"
    assert client.auth_test()["ok"] is True  # a failure scripted for one method leaves the others alone
    assert client.chat_postMessage(channel=CHANNEL, text="second")["ok"] is True
    assert [m["text"] for m in fake.channel_messages(CHANNEL)] == ["second"]
    assert [call.status for call in fake.calls_to("chat.postMessage")] == [500, 200]

    fake.fail(None, "fatal_error", times=2)
    assert api_error(client.auth_test).response["error"] == "fatal_error"
    assert api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="x")).response.status_code == 200
    assert client.auth_test()["ok"] is True

    fake.script(Step("auth.test", error=None, delay_s=0.5))
    with pytest.raises(TimeoutError):
        client_for(fake, timeout=0.1, retry_handlers=[]).auth_test()
    assert fake.calls[-1].status == 200  # recorded as answered, though too late for the client


def test_rate_limit_answers_429_with_retry_after_to_a_client_without_retries(fake: FakeSlack) -> None:
    fake.rate_limit(0.5, retry_after=1)
    error = api_error(client_for(fake).auth_test)
    assert error.response.status_code == 429 and error.response["error"] == "ratelimited"
    assert error.response.headers["Retry-After"] == "1"
    fake.rate_limit(5, method="chat.postMessage")
    assert api_error(lambda: client_for(fake).chat_postMessage(channel=CHANNEL, text="x")).response.status_code \
        == 429
    assert [call.status for call in fake.calls] == [429, 429]


def test_rate_limit_retry_handler_waits_out_the_window(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    # The handler sleeps Retry-After plus up to 1 s of jitter; without jitter the test takes 1 s flat.
    monkeypatch.setattr("slack_sdk.http_retry.builtin_handlers.random.random", lambda: 0.0)
    client = client_for(fake, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)])
    fake.rate_limit(0.5, retry_after=1)

    started = time.monotonic()
    assert client.chat_postMessage(channel=CHANNEL, text="after the window")["ok"] is True
    assert time.monotonic() - started >= 1.0
    assert [call.status for call in fake.calls_to("chat.postMessage")] == [429, 200]
    assert len(fake.channel_messages(CHANNEL)) == 1


def test_down_answers_503_until_it_is_back(fake: FakeSlack) -> None:
    client = client_for(fake)
    fake.down(0.2)
    error = api_error(client.auth_test)
    assert error.response.status_code == 503 and error.response["error"] == "service_unavailable"
    time.sleep(0.25)
    assert client.auth_test()["ok"] is True


def test_signed_action_verifies_and_parses_to_a_block_actions_payload(fake: FakeSlack) -> None:
    client = client_for(fake)
    button = {"type": "button", "action_id": "ack", "value": "inc_1", "text": {"type": "plain_text", "text": "Ack"}}
    ts = client.chat_postMessage(channel="C1", text="incident",
                                 blocks=[{"type": "actions", "block_id": "incident-actions", "elements": [button]}])["ts"]

    body, headers = fake.signed_action("ack", "inc_1", message_ts=ts)
    verifier = SignatureVerifier("test-signing-secret")
    assert verifier.is_valid_request(body, headers) is True
    assert verifier.is_valid_request(body.replace(b"inc_1", b"inc_2"), headers) is False
    assert SignatureVerifier("other-secret").is_valid_request(body, headers) is False
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"

    fields = urllib.parse.parse_qs(body.decode())
    assert list(fields) == ["payload"]
    payload = json.loads(fields["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U123" and payload["user"]["username"] == "alice" == payload["user"]["name"]
    assert payload["channel"]["id"] == "C1" and payload["message"]["ts"] == ts
    assert payload["container"] == {"type": "message", "message_ts": ts, "channel_id": "C1", "is_ephemeral": False}
    [action] = payload["actions"]
    assert (action["action_id"], action["value"], action["type"], action["block_id"]) == \
        ("ack", "inc_1", "button", "incident-actions")
    assert payload["response_url"].startswith("https://hooks.slack.com/actions/")
    assert payload["trigger_id"] and payload["api_app_id"] and payload["team"]["id"] == "T1"
    assert payload["message"]["blocks"][0]["elements"] == [button]

    stale_body, stale_headers = fake.signed_action("ack", "inc_1", timestamp=int(time.time()) - 600, secret="s")
    assert SignatureVerifier("s").is_valid_request(stale_body, stale_headers) is False  # too old to replay
    old_verifier = SignatureVerifier("s", clock=_FixedClock(int(stale_headers["X-Slack-Request-Timestamp"])))
    assert old_verifier.is_valid_request(stale_body, stale_headers) is True


class _FixedClock:
    def __init__(self, now: int) -> None:
        self._now = now

    def now(self) -> float:
        return float(self._now)


def test_concurrent_posts_get_distinct_increasing_timestamps(fake: FakeSlack) -> None:
    client = client_for(fake)
    results: list[str] = []
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            results.append(client.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == [] and len(set(results)) == 20
    stored = [m["ts"] for m in fake.channel_messages(CHANNEL)]
    assert sorted(stored, key=float) == stored and set(stored) == set(results)
    assert all(len(ts.split(".")[1]) == 6 for ts in stored)


def test_form_query_and_multipart_arguments_and_malformed_bodies(fake: FakeSlack) -> None:
    client = client_for(fake)
    # slack_sdk sends params= as a urlencoded body and data= as multipart; blocks/metadata arrive as JSON strings.
    form = client.api_call("chat.postMessage", params={"channel": CHANNEL, "text": "form",
                                                       "blocks": json.dumps([section("f")]),
                                                       "metadata": json.dumps(METADATA)})
    multipart = client.api_call("chat.postMessage", data={"channel": CHANNEL, "text": "multipart",
                                                          "thread_ts": form["ts"]})
    assert fake.messages[(CHANNEL, form["ts"])]["blocks"] == [section("f")]
    assert fake.messages[(CHANNEL, form["ts"])]["metadata"] == METADATA
    assert fake.thread(CHANNEL, form["ts"])[0]["text"] == "multipart" and multipart["ok"] is True
    assert isinstance(fake.calls_to("chat.postMessage")[1].args["thread_ts"], str)  # a ts is not a float

    with urllib.request.urlopen(fake.url + "auth.test?token=xoxb-test", timeout=5) as response:
        assert json.loads(response.read())["user_id"] == "U0BOT"
    assert fake.calls[-1].args == {} and fake.calls[-1].token == "xoxb-test"

    assert post_raw(fake, "chat.postMessage", b"{not json", "application/json") == \
        (200, {"ok": False, "error": "invalid_json"})
    assert post_raw(fake, "chat.postMessage", b"\xff=\xfe", "application/x-www-form-urlencoded")[1]["error"] == \
        "invalid_form_data"
    assert post_raw(fake, "chat.postMessage", b"hello", "text/plain")[1]["error"] == "invalid_form_data"
    assert post_raw(fake, "chat.nonsense", b"{}", "application/json") == \
        (200, {"ok": False, "error": "unknown_method"})
    assert post_raw(fake, "conversations.history", b"", "application/json", query="channel=%23incidents&limit=1")[1][
        "messages"][0]["text"] == "form"


def test_the_record_is_bounded_and_stop_is_prompt_with_a_keep_alive_connection_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeSlack, "MAX_RECORDED", 3)
    fake = FakeSlack().start()
    host, port = fake.url.split("//")[1].split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for i in range(5):
            connection.request("POST", f"/api/chat.postMessage?channel=C1&text=m{i}",
                               headers={"Authorization": "Bearer xoxb-test"})
            assert json.loads(connection.getresponse().read())["ok"] is True
        assert [call.args["text"] for call in fake.calls] == ["m2", "m3", "m4"]
        assert len(fake.channel_messages("C1")) == 5  # state is not bounded, only the record

        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 1.0
    finally:
        connection.close()
        fake.stop()
    with pytest.raises(RuntimeError):
        _ = fake.url


def test_python_m_entry_point_serves_until_terminated() -> None:
    process = subprocess.Popen([sys.executable, "-m", "otel_ai.testing.fake_slack", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("fake Slack API on http://127.0.0.1:"), line
        url = line.split()[4]
        assert f"(export SLACK_API_URL={url})" in line and url.endswith("/api/") and ":0/" not in url
        assert client_for(url).auth_test()["bot_id"] == "B0BOT"
        assert api_error(client_for(url, token="xoxb-other").auth_test).response["error"] == "invalid_auth"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr
