"""A real Prometheus (Debian's package) scrapes otel-ai's /metrics while otel-ai opens an
incident from real OTLP traffic; the KPI is then read back through PromQL, and every
query of the Grafana dashboard is checked to run."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.testing.harness import wait_for
from test_cli import send_failing_traffic
from test_grafana_dashboard import dashboard_queries

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, promql: str) -> dict:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with _OPENER.open(url, timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def value(self, promql: str) -> float | None:
        result = self.query(promql)["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def otel_ai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    settings = load_settings(env={})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, tmp_path_factory.mktemp("prom") / "data", console=False, credentials=Credentials())
    app.start()
    yield app
    app.stop(grace_s=0)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, otel_ai: App) -> Iterator[Prometheus]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("no prometheus binary: install Debian's prometheus (.ci/run does: apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: otel-ai
    static_configs:
      - targets: ["127.0.0.1:{otel_ai.ports.admin}"]
""")
    port = free_port()
    with open(tmp / "prometheus.log", "w") as log:
        process = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        server = Prometheus(port)
        wait_for("prometheus to answer", lambda: _ready(server), timeout_s=30)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(server: Prometheus) -> bool:
    try:
        with _OPENER.open(f"{server.url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_prometheus_reads_incidents_opened_through_promql(otel_ai: App, prometheus: Prometheus) -> None:
    wait_for("a first scrape", lambda: prometheus.value('up{job="otel-ai"}') == 1.0, timeout_s=30)
    send_failing_traffic(otel_ai.ports.http)
    wait_for("an incident in otel-ai", lambda: otel_ai.store.count() >= 1, timeout_s=30)

    # Prometheus lags by a scrape: wait until it has caught up with what otel-ai stored.
    opened = wait_for("the counter in Prometheus to match the store", lambda: (
        value if (value := prometheus.value("sum(otel_ai_incidents_opened_total)")) == otel_ai.store.count()
        else None), timeout_s=30)

    assert opened >= 1
    spans = prometheus.value("sum(otel_ai_spans_received_total)")
    assert spans is not None and spans > 0
    print(f"\nPromQL sum(otel_ai_incidents_opened_total) = {opened:g}; spans received = {spans:g}")


def test_every_dashboard_query_runs_in_prometheus(prometheus: Prometheus) -> None:
    for expr in dashboard_queries():
        answer = prometheus.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
