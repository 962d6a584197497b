"""Durable incident state in one SQLite file.

Each incident is one row: a few indexed columns for queries plus the complete Incident as
JSON in `state`, so that a restart rebuilds exactly what was in memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from otel_ai.model import Incident, Subject
from otel_ai.problems import root_key
from otel_ai.timefmt import rfc3339

# Bump when the table layout changes and add a step to _MIGRATIONS.
SCHEMA_VERSION = 6

_CREATE_V1 = (
    """
    CREATE TABLE IF NOT EXISTS incidents (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        service TEXT NOT NULL,
        method TEXT NOT NULL,
        route TEXT NOT NULL,
        subject_kind TEXT NOT NULL,
        opened_at_ns INTEGER NOT NULL,
        updated_at_ns INTEGER NOT NULL,
        resolved_at_ns INTEGER,
        version INTEGER NOT NULL,
        state TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS incidents_status ON incidents(status)",
    "CREATE INDEX IF NOT EXISTS incidents_opened ON incidents(opened_at_ns)",
    "CREATE INDEX IF NOT EXISTS incidents_resolved ON incidents(resolved_at_ns)",
)

# One row per paid Claude call: the daily budget is summed from here, so a restart
# neither forgets today's spend nor grants a fresh budget.
_CREATE_V2 = (
    """
    CREATE TABLE IF NOT EXISTS ai_calls (
        at_ns INTEGER NOT NULL,
        incident_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS ai_calls_at ON ai_calls(at_ns)",
)

# The notification outbox: what must reach Slack, durable across crashes. A "message" row
# means "bring the incident's one message up to its latest state" (one pending row per
# incident, so updates collapse); a "note" row is one thread reply, unique per incident,
# version and note kind, so a retry after a crash cannot queue it twice.
_CREATE_V3 = (
    """
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        note_key TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        uncertain INTEGER NOT NULL DEFAULT 0,
        due_ns INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        last_error TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, seq)",
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_one_message ON outbox(incident_id) WHERE kind = 'message' AND state = 'pending'",
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_one_note ON outbox(incident_id, note_key) WHERE kind = 'note'",
    """
    CREATE TABLE IF NOT EXISTS slack_messages (
        incident_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        ts TEXT NOT NULL,
        delivered_version INTEGER NOT NULL,
        notified_at_ns INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at_ns INTEGER NOT NULL,
        ends_at_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL
    )
    """,
)

# One outbox for every notifier (Slack, PagerDuty, webhook): rows carry the notifier, and
# `notifications` holds each notifier's reference to what it made (Slack's channel and ts).
_CREATE_V4 = (
    "ALTER TABLE outbox ADD COLUMN notifier TEXT NOT NULL DEFAULT 'slack'",
    "DROP INDEX outbox_pending",
    "DROP INDEX outbox_one_message",
    "DROP INDEX outbox_one_note",
    "CREATE INDEX outbox_pending ON outbox(notifier, state, seq)",
    "CREATE UNIQUE INDEX outbox_one_message ON outbox(notifier, incident_id) WHERE kind = 'message' AND state = 'pending'",
    "CREATE UNIQUE INDEX outbox_one_note ON outbox(notifier, incident_id, note_key) WHERE kind = 'note'",
    """
    CREATE TABLE notifications (
        notifier TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        ref TEXT NOT NULL,
        delivered_version INTEGER NOT NULL,
        notified_at_ns INTEGER NOT NULL,
        PRIMARY KEY (notifier, incident_id)
    )
    """,
    "INSERT INTO notifications SELECT 'slack', incident_id, json_object('channel', channel, 'ts', ts), "
    "delivered_version, notified_at_ns FROM slack_messages",
    "DROP TABLE slack_messages",
)

# Learnt state that survives a restart (snapshots.py): one blob per name, the latest only.
_CREATE_V5 = (
    """
    CREATE TABLE snapshots (
        name TEXT PRIMARY KEY,
        saved_at_ns INTEGER NOT NULL,
        blob BLOB NOT NULL
    )
    """,
)

# Problems: incidents whose localisation reached one root (otel_ai/problems.py). Members
# are the incidents carrying the problem's id; its status comes from theirs.
_CREATE_V6 = (
    "ALTER TABLE incidents ADD COLUMN problem_id TEXT",
    "CREATE INDEX incidents_problem ON incidents(problem_id) WHERE problem_id IS NOT NULL",
    """
    CREATE TABLE problems (
        id TEXT PRIMARY KEY,
        root_key TEXT NOT NULL,
        root_cause TEXT NOT NULL,
        opened_at_ns INTEGER NOT NULL,
        updated_at_ns INTEGER NOT NULL
    )
    """,
    "CREATE INDEX problems_opened ON problems(opened_at_ns)",
)

# _MIGRATIONS[n] takes a database from user_version n to n + 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {0: _CREATE_V1, 1: _CREATE_V2, 2: _CREATE_V3, 3: _CREATE_V4,
                                           4: _CREATE_V5, 5: _CREATE_V6}

_INCIDENT_FIELDS = {f.name for f in dataclasses.fields(Incident)}
_SUBJECT_FIELDS = {f.name for f in dataclasses.fields(Subject)}


# A problem is open while any member incident is not resolved.
_PROBLEM_OPEN = "EXISTS (SELECT 1 FROM incidents i WHERE i.problem_id = p.id AND i.status != 'resolved')"
_PROBLEM_FILTERS = {None: "", "open": f"WHERE {_PROBLEM_OPEN}", "resolved": f"WHERE NOT {_PROBLEM_OPEN}"}
PROBLEM_STATUSES = ("open", "resolved")


@dataclasses.dataclass(slots=True)
class Problem:
    """A problem as stored: its root and its member incidents (their own lifecycles)."""

    id: str
    root_key: str
    root_cause: dict[str, Any]
    opened_at_ns: int
    updated_at_ns: int
    members: list[Incident]

    @property
    def status(self) -> str:
        return "open" if any(m.status != "resolved" for m in self.members) else "resolved"

    def snapshot(self) -> dict[str, Any]:
        """The API's view: the root, and each member as the routes and dependencies it affects."""
        resolved = [m.resolved_at_ns or 0 for m in self.members]
        return {
            "id": self.id, "status": self.status, "root_key": self.root_key, "root_cause": self.root_cause,
            "opened_at": rfc3339(self.opened_at_ns), "updated_at": rfc3339(self.updated_at_ns),
            "resolved_at": rfc3339(max(resolved)) if self.status == "resolved" and resolved else None,
            "members": [{
                "id": m.id, "type": m.type, "severity": m.severity, "status": m.status,
                "subject_kind": m.subject.kind, "service": m.subject.service, "method": m.subject.method,
                "route": m.subject.route, "summary": m.summary, "metric": m.data.get("metric"),
                "unit": m.data.get("unit"), "baseline_value": m.data.get("baseline_value"),
                "current_value": m.data.get("current_value"), "peak_value": m.data.get("peak_value"),
                "opened_at": rfc3339(m.opened_at_ns), "resolved_at": rfc3339(m.resolved_at_ns),
            } for m in self.members],
        }


class StoreError(Exception):
    """The incident database cannot be opened or used."""


def incident_to_state(incident: Incident) -> dict[str, Any]:
    return dataclasses.asdict(incident)


def incident_from_state(state: dict[str, Any]) -> Incident:
    """Inverse of incident_to_state. Unknown keys (written by a newer version) are ignored
    and missing ones take their defaults, so rows survive field additions."""
    values = {k: v for k, v in state.items() if k in _INCIDENT_FIELDS}
    subject = state["subject"]
    values["subject"] = Subject(**{k: v for k, v in subject.items() if k in _SUBJECT_FIELDS})
    return Incident(**values)


class IncidentStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by the pipeline and admin threads; the lock serialises it.
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open incident store {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"incident store {self.path} is not a usable SQLite database: {exc}") from exc

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"incident store {self.path} has schema version {version}, newer than this "
                f"otel-ai understands ({SCHEMA_VERSION}); upgrade otel-ai or use another --data-dir")
        while version < SCHEMA_VERSION:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[version]:
                    self._conn.execute(statement)
                version += 1
                # PRAGMA does not take parameters; version is our own int.
                self._conn.execute(f"PRAGMA user_version = {int(version)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def save(self, incident: Incident) -> bool:
        """Insert or update; returns False (and writes nothing) when the stored row has a
        higher version, so a late or replayed write never rolls an incident back."""
        s = incident.subject
        row = (
            incident.id, incident.type, incident.severity, incident.status,
            s.service, s.method, s.route, s.kind,
            incident.opened_at_ns, incident.updated_at_ns, incident.resolved_at_ns,
            incident.version, json.dumps(incident_to_state(incident), ensure_ascii=False), incident.problem_id,
        )
        with self._lock:
            cursor = self._conn.execute(
                """
                INSERT INTO incidents (id, type, severity, status, service, method, route,
                    subject_kind, opened_at_ns, updated_at_ns, resolved_at_ns, version, state, problem_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET
                    type = excluded.type, severity = excluded.severity, status = excluded.status,
                    service = excluded.service, method = excluded.method, route = excluded.route,
                    subject_kind = excluded.subject_kind, opened_at_ns = excluded.opened_at_ns,
                    updated_at_ns = excluded.updated_at_ns, resolved_at_ns = excluded.resolved_at_ns,
                    version = excluded.version, state = excluded.state, problem_id = excluded.problem_id
                WHERE incidents.version <= excluded.version
                """,
                row,
            )
            saved = cursor.rowcount > 0
            if saved and incident.problem_id is not None and incident.root_cause:
                self._save_problem(incident)
            return saved

    def _save_problem(self, member: Incident) -> None:
        """The problem row: its root as its first member found it, its time span over all."""
        root = member.root_cause or {}
        self._conn.execute(
            """
            INSERT INTO problems (id, root_key, root_cause, opened_at_ns, updated_at_ns) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET opened_at_ns = MIN(problems.opened_at_ns, excluded.opened_at_ns),
                updated_at_ns = MAX(problems.updated_at_ns, excluded.updated_at_ns)
            """,
            (member.problem_id, root_key(root), json.dumps(root, ensure_ascii=False), member.opened_at_ns,
             member.updated_at_ns))

    def problem(self, problem_id: str) -> Problem | None:
        with self._lock:
            row = self._conn.execute("SELECT id, root_key, root_cause, opened_at_ns, updated_at_ns FROM problems "
                                     "WHERE id = ?", (problem_id,)).fetchone()
        return self._problem(row) if row else None

    def problems(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Problem]:
        """Newest opened first; status "open" (a member not resolved) or "resolved"."""
        where = _PROBLEM_FILTERS[status]
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, root_key, root_cause, opened_at_ns, updated_at_ns FROM problems p {where} "
                "ORDER BY opened_at_ns DESC, id DESC LIMIT ? OFFSET ?", (int(limit), int(offset))).fetchall()
        return [self._problem(row) for row in rows]

    def count_problems(self, status: str | None = None) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM problems p {_PROBLEM_FILTERS[status]}").fetchone()[0])

    def problem_lead(self, problem_id: str) -> Incident | None:
        """The member that stands for a problem's notification when reminding: an acknowledged
        one if any (acknowledging the message quiets the problem), else the earliest open one."""
        found = self._select("WHERE problem_id = ? AND status != 'resolved' "
                             "ORDER BY status = 'acknowledged' DESC, opened_at_ns, id LIMIT 1", (problem_id,))
        return found[0] if found else None

    def _problem(self, row) -> Problem:
        pid, key, root, opened, updated = row
        members = self._select("WHERE problem_id = ? ORDER BY opened_at_ns, id", (pid,))
        return Problem(pid, key, json.loads(root), opened, updated, members)

    def load_unresolved_or_recent(self, resolved_after_ns: int) -> list[Incident]:
        """Every incident not yet resolved, plus those resolved at or after resolved_after_ns
        (still candidates for a reopen), oldest first."""
        return self._select(
            "WHERE status != 'resolved' OR resolved_at_ns >= ? ORDER BY opened_at_ns, id",
            (resolved_after_ns,),
        )

    def get(self, incident_id: str) -> Incident | None:
        found = self._select("WHERE id = ?", (incident_id,))
        return found[0] if found else None

    def list(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Incident]:
        """Newest opened first."""
        where, params = self._status_filter(status)
        return self._select(
            f"{where} ORDER BY opened_at_ns DESC, id DESC LIMIT ? OFFSET ?",
            (*params, int(limit), int(offset)),
        )

    def count(self, status: str | None = None) -> int:
        where, params = self._status_filter(status)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM incidents {where}", params).fetchone()[0])

    def record_ai_call(self, at_ns: int, incident_id: str, model: str, input_tokens: int, output_tokens: int,
                       cache_write_tokens: int, cache_read_tokens: int, cost_usd: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO ai_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (at_ns, incident_id, model, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens,
                 cost_usd))

    def ai_spend_since(self, since_ns: int) -> tuple[float, int]:
        """(USD spent, paid calls) from since_ns on."""
        with self._lock:
            cost, calls = self._conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM ai_calls WHERE at_ns >= ?", (since_ns,)).fetchone()
        return float(cost), int(calls)

    def save_snapshot(self, name: str, saved_at_ns: int, blob: bytes) -> None:
        """Replace the snapshot called `name`."""
        with self._lock:
            self._conn.execute("INSERT INTO snapshots (name, saved_at_ns, blob) VALUES (?, ?, ?) "
                               "ON CONFLICT(name) DO UPDATE SET saved_at_ns = excluded.saved_at_ns, blob = excluded.blob",
                               (name, saved_at_ns, blob))

    def load_snapshot(self, name: str) -> tuple[int, bytes] | None:
        """(saved_at_ns, blob) of the snapshot called `name`, if there is one."""
        with self._lock:
            row = self._conn.execute("SELECT saved_at_ns, blob FROM snapshots WHERE name = ?", (name,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the store's lock, in one IMMEDIATE transaction: for the
        modules that own other tables of this file (the notification outbox, silences)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _status_filter(status: str | None) -> tuple[str, tuple[Any, ...]]:
        return ("WHERE status = ?", (status,)) if status is not None else ("", ())

    def _select(self, clause: str, params: tuple[Any, ...]) -> list[Incident]:
        with self._lock:
            rows = self._conn.execute(f"SELECT state FROM incidents {clause}", params).fetchall()
        return [incident_from_state(json.loads(state)) for (state,) in rows]
