from __future__ import annotations

import sqlite3
import threading

import pytest

from otel_ai.model import DEPENDENCY, ROUTE, Incident, Subject
from otel_ai.store import (
    SCHEMA_VERSION,
    IncidentStore,
    StoreError,
    incident_from_state,
    incident_to_state,
)

T0 = 1_771_165_740_000_000_000  # 2026-02-15T14:29:00Z


def make_incident(incident_id: str = "inc_1", opened_at_ns: int = T0, **changes) -> Incident:
    incident = Incident(
        id=incident_id,
        type="ERROR_RATE_SPIKE",
        severity="critical",
        status="open",
        subject=Subject(ROUTE, "checkout", "POST", "/api/payments"),
        summary="Error rate 35.0% on POST /api/payments (threshold 10%)",
        confidence=0.91,
        opened_at_ns=opened_at_ns,
        updated_at_ns=opened_at_ns,
        data={"metric": "error_rate", "current_value": 35.0, "threshold": 10.0, "unit": "%"},
        context={"sample_count": 412, "recent_samples": [{"timestamp": "x", "value": 28.0}]},
        suspects=[{"key": "service.version", "value": "2.0.0", "bad_share": 0.95, "good_share": 0.08}],
    )
    for name, value in changes.items():
        setattr(incident, name, value)
    return incident


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(tmp_path / "data" / "incidents.db")
    yield s
    s.close()


def test_state_round_trip_rebuilds_identical_incident():
    original = make_incident(
        resolved_at_ns=T0 + 5, acknowledged_by="alice", acknowledged_at_ns=T0 + 3,
        analysis={"root_cause": "bad deploy"}, version=4, below_min_confidence=True,
        last_breach_ns=T0 + 2, healthy_since_ns=T0 + 4, reopen_count=2, last_change="resolved",
        subject=Subject(DEPENDENCY, "payments-db", "", "payments-db"),
    )
    rebuilt = incident_from_state(incident_to_state(original))
    assert rebuilt == original
    assert isinstance(rebuilt.subject, Subject)


def test_from_state_tolerates_unknown_and_missing_keys():
    state = incident_to_state(make_incident())
    state["field_from_the_future"] = 1
    del state["reopen_count"]
    rebuilt = incident_from_state(state)
    assert rebuilt.reopen_count == 0
    assert rebuilt.id == "inc_1"


def test_save_get_and_restart_on_same_file(tmp_path):
    path = tmp_path / "nested" / "dir" / "incidents.db"
    first = IncidentStore(path)
    incident = make_incident(analysis={"text": "ünïcode"})
    assert first.save(incident) is True
    first.close()

    second = IncidentStore(path)
    try:
        assert second.get("inc_1") == incident
        assert second.get("missing") is None
        assert second.schema_version() == SCHEMA_VERSION
        journal = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert journal == "wal"
    finally:
        second.close()


def test_version_guard_refuses_older_write(store):
    assert store.save(make_incident(version=3, status="acknowledged"))
    assert store.save(make_incident(version=2, status="open")) is False
    assert store.get("inc_1").status == "acknowledged"
    # Same version rewrites (a retry of the same change); higher version wins.
    assert store.save(make_incident(version=3, status="acknowledged", summary="again"))
    assert store.get("inc_1").summary == "again"
    assert store.save(make_incident(version=4, status="resolved", resolved_at_ns=T0 + 9))
    assert store.get("inc_1").status == "resolved"
    assert store.count() == 1


def test_load_unresolved_or_recent(store):
    store.save(make_incident("open", status="open"))
    store.save(make_incident("acked", status="acknowledged"))
    store.save(make_incident("old", status="resolved", resolved_at_ns=T0 + 100))
    store.save(make_incident("recent", status="resolved", resolved_at_ns=T0 + 1000))
    store.save(make_incident("edge", status="resolved", resolved_at_ns=T0 + 500))
    loaded = {i.id for i in store.load_unresolved_or_recent(resolved_after_ns=T0 + 500)}
    assert loaded == {"open", "acked", "recent", "edge"}


def test_list_newest_first_with_status_limit_offset(store):
    for n in range(5):
        store.save(make_incident(f"inc_{n}", opened_at_ns=T0 + n, status="resolved" if n % 2 else "open"))
    assert [i.id for i in store.list()] == ["inc_4", "inc_3", "inc_2", "inc_1", "inc_0"]
    assert [i.id for i in store.list(limit=2, offset=1)] == ["inc_3", "inc_2"]
    assert [i.id for i in store.list(status="open")] == ["inc_4", "inc_2", "inc_0"]
    assert store.count() == 5
    assert store.count(status="resolved") == 2
    assert store.count(status="acknowledged") == 0


def test_concurrent_saves_from_threads(store):
    def worker(prefix: str) -> None:
        for n in range(50):
            store.save(make_incident(f"{prefix}_{n}"))

    threads = [threading.Thread(target=worker, args=(f"t{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 200


def test_corrupt_file_raises_store_error_naming_path(tmp_path):
    path = tmp_path / "incidents.db"
    path.write_bytes(b"this is not a sqlite database at all" * 200)
    with pytest.raises(StoreError) as info:
        IncidentStore(path)
    assert str(path) in str(info.value)


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "incidents.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        IncidentStore(path)
