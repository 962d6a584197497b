"""`otel-ai check`: the key verified by one call to the (fake) API, and today's spend."""
from __future__ import annotations

import time

import pytest

from otel_ai.cli import main
from otel_ai.store import IncidentStore
from otel_ai.testing.fake_anthropic import FakeAnthropic


@pytest.fixture
def fake(monkeypatch):
    with FakeAnthropic(api_key="good-key") as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.chdir("/")  # no stray .env from the working directory
        yield server


def run(capsys, tmp_path, *extra) -> tuple[int, str]:
    code = main(["check", "--data-dir", str(tmp_path / "data"), *extra])
    return code, capsys.readouterr().out


def test_check_verifies_the_key_with_one_call_per_model(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "good-key")
    store = IncidentStore(tmp_path / "data" / "incidents.db")
    store.record_ai_call(time.time_ns(), "inc_1", "claude-haiku-5-5", 1000, 500, 0, 0, 0.75)
    store.close()
    code, out = run(capsys, tmp_path)
    assert "✅ API key accepted; model claude-sonnet-5-5 available" in out
    assert "✅ API key accepted; model claude-haiku-5-5 available" in out
    assert "budget used today: $0.7500 of $5.00 (15%) in 1 call(s)" in out
    paths = [r.path for r in fake.requests]
    assert paths == ["/v1/models/claude-haiku-5-5", "/v1/models/claude-sonnet-5-5"]
    assert fake.messages_requests() == []  # verifying costs nothing
    assert code == 0


def test_check_fails_on_a_rejected_key(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "bad-key")
    code, out = run(capsys, tmp_path)
    assert "❌ ANTHROPIC_API_KEY was rejected" in out
    assert code == 1


def test_check_verifies_the_slack_token_and_shows_the_outbox(tmp_path, capsys, monkeypatch):
    from otel_ai.testing.fake_slack import FakeSlack

    monkeypatch.chdir("/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        monkeypatch.setenv("SLACK_INCIDENT_CHANNEL", "#incidents")
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
        IncidentStore(tmp_path / "data" / "incidents.db").close()
        code, out = run(capsys, tmp_path)
        assert "✅ Slack token accepted: bot otel-ai in team Fake" in out
        assert "critical → #incidents" in out
        assert "⚠️  SLACK_SIGNING_SECRET not set" in out
        assert "outbox: 0 pending, 0 undeliverable" in out
        assert [c.method for c in slack.calls] == ["auth.test"]
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
        code, out = run(capsys, tmp_path)
        assert "❌ Slack refused the token: invalid_auth" in out and code == 1
