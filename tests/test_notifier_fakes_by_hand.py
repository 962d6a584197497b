"""The PagerDuty and webhook fakes as a person runs them: `python -m ...` prints where it
listens, then one readable line per call it receives."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest

from otel_ai.notifiers.webhook import signature

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run_fake(module: str, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    banner = process.stdout.readline()
    url = re.search(r"(http://127\.0\.0\.1:\d+\S*?)[ )]", banner)
    assert url, banner
    return process, url.group(1)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers},
                                     method="POST")
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def stop():
    processes = []
    yield processes.append
    for process in processes:
        process.terminate()
        process.wait(10)


def test_fake_pagerduty_prints_one_line_per_event(stop):
    process, url = run_fake("otel_ai.testing.fake_pagerduty")
    stop(process)
    event = {"routing_key": "test-routing-key", "event_action": "trigger", "dedup_key": "inc_0123456789abcdef",
             "payload": {"summary": "Error rate 35.0% on POST /api/pay", "source": "otel-ai", "severity": "critical"}}
    assert post(url, json.dumps(event).encode(), {}) == 202
    assert process.stdout.readline().strip() == "202 trigger     inc_0123456789abcdef Error rate 35.0% on POST /api/pay"
    assert post(url, json.dumps({**event, "routing_key": "wrong"}).encode(), {}) == 400
    assert "'routing_key' is invalid" in process.stdout.readline()


def test_fake_webhook_prints_one_line_per_post_and_checks_the_signature(stop):
    process, url = run_fake("otel_ai.testing.fake_webhook", "--secret", "s3cret")
    stop(process)
    body = json.dumps({"status": "firing", "alerts": [{"labels": {"alertname": "ERROR_RATE_SPIKE", "service": "checkout",
                                                                  "route": "/api/pay", "incident_id": "inc_1"}}]}).encode()
    assert post(url, body, {"X-Otel-AI-Signature-256": signature("s3cret", body)}) == 200
    assert process.stdout.readline().strip() == "200 firing ERROR_RATE_SPIKE checkout /api/pay [inc_1] signed"
    assert post(url, body, {"X-Otel-AI-Signature-256": signature("wrong", body)}) == 401
    assert process.stdout.readline().startswith("401 ")
