from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from email.message import Message

import pytest

from otel_ai.admin import AdminServer, Request, Response
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore
from otel_ai.testing.factory import IncidentFactory

T0 = 1_771_165_740_000_000_000


class Readiness:
    def __init__(self) -> None:
        self.ready = True

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
def admin(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    metrics = SelfMetrics()
    readiness = Readiness()
    server = AdminServer(store, metrics, port=0, ready=readiness)
    port = server.start()
    server.readiness = readiness  # handle for tests
    server.base = f"http://127.0.0.1:{port}"
    yield server
    server.stop()
    store.close()


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, Message, bytes]:
    """Status, headers (names case-insensitive, as in HTTP) and body."""
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def test_start_returns_bound_port_and_healthz(admin):
    assert admin.port > 0
    status, headers, body = fetch(admin.base + "/healthz")
    assert (status, body) == (200, b"ok")
    assert headers["Content-Type"].startswith("text/plain")


def test_readyz_follows_the_callable(admin):
    assert fetch(admin.base + "/readyz")[::2] == (200, b"ready")
    admin.readiness.ready = False
    assert fetch(admin.base + "/readyz")[::2] == (503, b"not ready")


def test_metrics_exposes_incremented_counter(admin):
    admin.metrics.incident_changes.labels(change="opened").inc(3)
    status, headers, body = fetch(admin.base + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert 'otel_ai_incident_changes_total{change="opened"} 3.0' in body.decode()


def test_list_incidents_paging_filter_and_total(admin):
    for n in range(6):
        admin.store.save(IncidentFactory.create(id=f"inc_{n}", opened_at_ns=T0 + n,
                                                status="resolved" if n < 2 else "open"))
    status, headers, body = fetch(admin.base + "/api/incidents?status=open&limit=2&offset=1")
    payload = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [i["id"] for i in payload["incidents"]] == ["inc_4", "inc_3"]
    assert payload["total"] == 4
    payload = json.loads(fetch(admin.base + "/api/incidents")[2])
    assert payload["total"] == 6 and len(payload["incidents"]) == 6
    assert payload["incidents"][0]["opened_at"] == "2026-02-15T14:29:00Z"


def test_list_limit_is_capped(admin, monkeypatch):
    seen = {}
    real_list = admin.store.list

    def spy(**kwargs):
        seen.update(kwargs)
        return real_list(**kwargs)

    monkeypatch.setattr(admin.store, "list", spy)
    assert fetch(admin.base + "/api/incidents?limit=100000")[0] == 200
    assert seen["limit"] == 500


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=-1", "offset=x", "offset=-5", "status=bogus"])
def test_list_rejects_bad_params(admin, query):
    status, headers, body = fetch(admin.base + "/api/incidents?" + query)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]


def test_get_incident_found_and_missing(admin):
    admin.store.save(IncidentFactory.create(id="inc_abc"))
    status, _, body = fetch(admin.base + "/api/incidents/inc_abc")
    assert status == 200 and json.loads(body)["id"] == "inc_abc"
    status, _, body = fetch(admin.base + "/api/incidents/nope")
    assert status == 404
    assert json.loads(body) == {"error": "incident not found: nope"}


def test_unknown_path_is_404_json(admin):
    status, headers, body = fetch(admin.base + "/does/not/exist")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert "error" in json.loads(body)


def test_wrong_method_is_405(admin):
    status, headers, body = fetch(admin.base + "/api/incidents", method="POST", data=b"x=1")
    assert status == 405
    assert headers["Allow"] == "GET"
    assert "error" in json.loads(body)
    assert fetch(admin.base + "/healthz", method="DELETE")[0] == 405


def test_handler_exception_becomes_500_json(admin, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(admin.store, "get", explode)
    with caplog.at_level(logging.ERROR, logger="otel_ai.admin"):
        status, _, body = fetch(admin.base + "/api/incidents/inc_1")
    assert status == 500
    assert json.loads(body) == {"error": "internal error"}
    assert "disk on fire" in caplog.text
    # The server keeps serving afterwards.
    assert fetch(admin.base + "/healthz")[0] == 200


def test_added_route_receives_body_and_params(admin):
    def echo(request: Request) -> Response:
        return Response.json(200, {"name": request.params["name"], "body": request.body.decode()})

    admin.add_route("POST", r"/echo/(?P<name>[^/]+)", echo)
    status, _, body = fetch(admin.base + "/echo/slack", method="POST", data=b"payload=1")
    assert status == 200
    assert json.loads(body) == {"name": "slack", "body": "payload=1"}


def test_stop_releases_the_port(tmp_path):
    store = IncidentStore(tmp_path / "i.db")
    server = AdminServer(store, SelfMetrics(), port=0)
    port = server.start()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    store.close()
