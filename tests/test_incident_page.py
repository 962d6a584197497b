"""The incident page in a real headless Chromium (Debian's, driven by playwright), on a
real otel-ai that opened a real incident from OTLP traffic: the page shows the metric,
the suspects and the trace links, and its Acknowledge button works. Plus the page's
protections over plain HTTP, and the chart on its own."""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.page.chart import metric_chart
from otel_ai.testing.harness import wait_for
from test_cli import send_failing_traffic

CHROMIUM = "/usr/bin/chromium"
JAEGER = "http://jaeger.example:16686/trace/{trace_id}"
# Chromium as root needs --no-sandbox; the rest keeps it off the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> dict:
    with _OPENER.open(url, timeout=5) as response:
        return json.load(response)


def post_form(url: str, body: bytes, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Running:
    def __init__(self, app: App, incident: dict) -> None:
        self.app, self.incident = app, incident
        self.base = f"http://127.0.0.1:{app.ports.admin}"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings = load_settings(env={"OTEL_AI_TRACE_URL": JAEGER})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, tmp_path_factory.mktemp("page") / "data", console=False, credentials=Credentials())
    ports = app.start()
    try:
        send_failing_traffic(ports.http)
        base = f"http://127.0.0.1:{ports.admin}"
        incident = wait_for("an open incident with suspects and exemplars", lambda: next(
            (i for i in get_json(f"{base}/api/incidents?status=open")["incidents"]
             if i["suspects"] and i["context"].get("exemplar_trace_ids")), None), timeout_s=30)
        yield Running(app, incident)
    finally:
        app.stop(grace_s=0)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (.ci/run does: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_page_shows_the_incident_and_acknowledges_it(running: Running, browser, tmp_path: Path) -> None:
    incident_id = running.incident["id"]
    page = browser.new_page(viewport={"width": 1000, "height": 1400})
    try:
        # The server's slots close on the wall clock, so the incident may change while the page
        # loads: compare with a version the API gave both before and after the page rendered.
        for _ in range(5):
            before = get_json(f"{running.base}/api/incidents/{incident_id}")
            page.goto(f"{running.base}/incidents")
            page.click(f"a[href='/incidents/{incident_id}']")
            page.wait_for_url(f"**/incidents/{incident_id}")
            incident = get_json(f"{running.base}/api/incidents/{incident_id}")
            if incident["version"] == before["version"]:
                break
        screenshot = tmp_path / "incident.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"\nscreenshot: {screenshot}")
        assert screenshot.stat().st_size > 10_000

        # The incident's own numbers, as the API has them.
        data, unit = incident["data"], incident["data"]["unit"]
        assert page.inner_text("dd.current") == f"{data['current_value']:g}{unit}"
        assert page.inner_text("dd.threshold") == f"{data['threshold']:g}{unit}"
        assert page.inner_text(".summary") == incident["summary"]
        chart = page.locator("svg.chart")
        assert chart.is_visible()
        assert chart.locator("circle").count() == len(incident["context"]["recent_samples"])
        assert chart.locator("line.threshold").count() == 1
        # Suspects, as ranked.
        top = incident["suspects"][0]
        first_row = page.locator("table.suspects tr").nth(1).inner_text()
        assert top["key"] in first_row and str(top["value"]) in first_row
        # Trace links through the configured Jaeger template.
        hrefs = page.eval_on_selector_all("a.trace", "links => links.map(a => a.href)")
        assert hrefs == [JAEGER.replace("{trace_id}", t) for t in incident["context"]["exemplar_trace_ids"]]

        page.fill("input[name=by]", "carol")
        page.click("button[type=submit]")
        page.wait_for_url(f"**/incidents/{incident['id']}")
        assert page.inner_text("h1 .badge") == "acknowledged"
        page.screenshot(path=str(tmp_path / "acknowledged.png"), full_page=True)
    finally:
        page.close()
    stored = get_json(f"{running.base}/api/incidents/{incident['id']}")
    assert stored["status"] == "acknowledged" and stored["acknowledged_by"] == "carol (incident page)"


def test_a_cross_site_form_post_is_refused(running: Running) -> None:
    others = [i for i in get_json(f"{running.base}/api/incidents?status=open")["incidents"]]
    target = others[0]["id"] if others else running.incident["id"]
    status = post_form(f"{running.base}/incidents/{target}/ack", b"by=mallory",
                       {"Origin": "http://evil.example", "Host": f"127.0.0.1:{running.app.ports.admin}"})
    assert status == 403
    assert get_json(f"{running.base}/api/incidents/{target}")["acknowledged_by"] != "mallory (incident page)"


def test_unknown_incident_is_404_html(running: Running) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        _OPENER.open(f"{running.base}/incidents/inc_0000000000000000", timeout=5)
    assert error.value.code == 404
    assert "Unknown incident" in error.value.read().decode()


def test_page_sends_a_strict_content_security_policy(running: Running) -> None:
    with _OPENER.open(f"{running.base}/incidents", timeout=5) as response:
        policy = response.headers["Content-Security-Policy"]
        html = response.read().decode()
    assert "default-src 'none'" in policy and "form-action 'self'" in policy
    assert "<script" not in html and "http://" not in html.replace(running.base, "")


def test_with_an_admin_token_the_form_needs_it(tmp_path: Path) -> None:
    from otel_ai.testing.factory import IncidentFactory

    settings = load_settings(env={"OTEL_AI_ADMIN_TOKEN": "t0ken"})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, tmp_path / "data", console=False, credentials=Credentials())
    ports = app.start()
    try:
        incident = IncidentFactory.create()
        app.store.save(incident)
        url = f"http://127.0.0.1:{ports.admin}/incidents/{incident.id}"
        with _OPENER.open(url, timeout=5) as response:
            assert 'name=token' in response.read().decode()
        assert post_form(f"{url}/ack", b"by=dave&token=wrong") == 401
        assert app.store.get(incident.id).status == "open"
    finally:
        app.stop(grace_s=0)


def test_chart_draws_samples_threshold_and_baseline() -> None:
    samples = [{"timestamp": f"2026-01-01T00:00:{10 * i:02d}Z", "value": v} for i, v in enumerate([1.0, 3.0, 40.0])]
    svg = metric_chart(samples, threshold=10.0, baseline=0.5, unit="%")
    assert svg.count("<circle") == 3
    assert 'class="threshold"' in svg and 'class="baseline"' in svg
    assert "threshold 10%" in svg and "baseline 0.5%" in svg
    assert "00:00:00" in svg and "00:00:20" in svg
    assert "No samples" in metric_chart([], 10.0, None)


def test_chart_escapes_what_it_is_given() -> None:
    svg = metric_chart([{"timestamp": "<script>", "value": 1.0}], threshold=None, baseline=None, unit="<b>")
    assert "<script>" not in svg and "<b>" not in svg
