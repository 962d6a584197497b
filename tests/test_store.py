from __future__ import annotations

import sqlite3
import threading

import pytest

from otel_ai.model import DEPENDENCY, Subject
from otel_ai.store import (
    SCHEMA_VERSION,
    IncidentStore,
    StoreError,
    incident_from_state,
    incident_to_state,
)
from otel_ai.testing.factory import IncidentFactory

T0 = 1_771_165_740_000_000_000  # 2026-02-15T14:29:00Z


# A nested evidence list, so the JSON round trips below cover lists of dicts with floats.
SUSPECTS = [{"key": "service.version", "value": "2.0.0", "bad_share": 0.95, "good_share": 0.08}]


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(tmp_path / "data" / "incidents.db")
    yield s
    s.close()


def test_state_round_trip_rebuilds_identical_incident():
    original = IncidentFactory.create(
        id="inc_1", opened_at_ns=T0, suspects=SUSPECTS,
        resolved_at_ns=T0 + 5, acknowledged_by="alice", acknowledged_at_ns=T0 + 3,
        analysis={"root_cause": "bad deploy"}, version=4, below_min_confidence=True,
        last_breach_ns=T0 + 2, healthy_since_ns=T0 + 4, reopen_count=2, last_change="resolved",
        subject=Subject(DEPENDENCY, "payments-db", "", "payments-db"),
    )
    rebuilt = incident_from_state(incident_to_state(original))
    assert rebuilt == original
    assert isinstance(rebuilt.subject, Subject)


def test_from_state_tolerates_unknown_and_missing_keys():
    state = incident_to_state(IncidentFactory.create(id="inc_1", reopen_count=3))
    state["field_from_the_future"] = 1
    del state["reopen_count"]
    rebuilt = incident_from_state(state)
    assert rebuilt.reopen_count == 0
    assert rebuilt.id == "inc_1"


def test_save_get_and_restart_on_same_file(tmp_path):
    path = tmp_path / "nested" / "dir" / "incidents.db"
    first = IncidentStore(path)
    incident = IncidentFactory.create(id="inc_1", opened_at_ns=T0, suspects=SUSPECTS, analysis={"text": "ünïcode"})
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
    assert store.save(IncidentFactory.create(id="inc_1", version=3, status="acknowledged"))
    assert store.save(IncidentFactory.create(id="inc_1", version=2, status="open")) is False
    assert store.get("inc_1").status == "acknowledged"
    # Same version rewrites (a retry of the same change); higher version wins.
    assert store.save(IncidentFactory.create(id="inc_1", version=3, status="acknowledged", summary="again"))
    assert store.get("inc_1").summary == "again"
    assert store.save(IncidentFactory.create(id="inc_1", version=4, status="resolved", resolved_at_ns=T0 + 9))
    assert store.get("inc_1").status == "resolved"
    assert store.count() == 1


def test_load_unresolved_or_recent(store):
    store.save(IncidentFactory.create(id="open", opened_at_ns=T0, status="open"))
    store.save(IncidentFactory.create(id="acked", opened_at_ns=T0, status="acknowledged"))
    store.save(IncidentFactory.create(id="old", opened_at_ns=T0, status="resolved", resolved_at_ns=T0 + 100))
    store.save(IncidentFactory.create(id="recent", opened_at_ns=T0, status="resolved", resolved_at_ns=T0 + 1000))
    store.save(IncidentFactory.create(id="edge", opened_at_ns=T0, status="resolved", resolved_at_ns=T0 + 500))
    loaded = {i.id for i in store.load_unresolved_or_recent(resolved_after_ns=T0 + 500)}
    assert loaded == {"open", "acked", "recent", "edge"}


def test_list_newest_first_with_status_limit_offset(store):
    for n in range(5):
        store.save(IncidentFactory.create(id=f"inc_{n}", opened_at_ns=T0 + n, status="resolved" if n % 2 else "open"))
    assert [i.id for i in store.list()] == ["inc_4", "inc_3", "inc_2", "inc_1", "inc_0"]
    assert [i.id for i in store.list(limit=2, offset=1)] == ["inc_3", "inc_2"]
    assert [i.id for i in store.list(status="open")] == ["inc_4", "inc_2", "inc_0"]
    assert store.count() == 5
    assert store.count(status="resolved") == 2
    assert store.count(status="acknowledged") == 0


def test_concurrent_saves_from_threads(store):
    def worker(prefix: str) -> None:
        for n in range(50):
            store.save(IncidentFactory.create(id=f"{prefix}_{n}"))

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
