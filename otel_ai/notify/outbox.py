"""The durable notification outbox, in the incident store's SQLite file.

Notifications are written here in the same process step that decides them, and a
delivery worker sends them in `seq` order; a row is marked done only after Slack said
ok. So a crash or a Slack outage loses nothing (at least once), and the delivery side
makes it exactly once by checking Slack for the message before re-posting (see
exporters/slack.py). While Slack is down the "message" row of an incident is rewritten
in place to the latest version, so updates collapse to the latest state.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from otel_ai.store import IncidentStore

MESSAGE = "message"  # bring the incident's one message up to date
NOTE = "note"  # one reply in the incident's thread

PENDING, DONE, DEAD = "pending", "done", "dead"
KEEP_DONE = 5_000  # delivered (and undeliverable) rows kept for inspection; older ones are pruned


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    incident_id: str
    kind: str
    note_key: str
    version: int
    payload: dict[str, Any]
    attempts: int
    due_ns: int
    uncertain: bool  # an earlier attempt may have reached Slack (crash, timeout): look before posting


@dataclass(frozen=True, slots=True)
class SlackMessageRef:
    incident_id: str
    channel: str
    ts: str
    delivered_version: int
    notified_at_ns: int


class Outbox:
    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def put_message(self, incident_id: str, version: int, due_ns: int, payload: dict[str, Any]) -> None:
        """Queue (or collapse into the pending) update of the incident's message."""
        with self.store.transaction() as db:
            row = db.execute("SELECT seq, due_ns FROM outbox WHERE incident_id = ? AND kind = ? AND state = ?",
                             (incident_id, MESSAGE, PENDING)).fetchone()
            if row is None:
                db.execute("INSERT INTO outbox (incident_id, kind, version, payload, state, due_ns, created_ns) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (incident_id, MESSAGE, version, json.dumps(payload), PENDING, due_ns, due_ns))
            else:
                # Keep the older seq (its place in line) and the earlier due time.
                db.execute("UPDATE outbox SET version = MAX(version, ?), payload = ?, due_ns = MIN(due_ns, ?) "
                           "WHERE seq = ?", (version, json.dumps(payload), due_ns, row[0]))

    def put_note(self, incident_id: str, note_key: str, version: int, due_ns: int, payload: dict[str, Any]) -> bool:
        """Queue one thread reply; False if that note was queued before (idempotent)."""
        with self.store.transaction() as db:
            try:
                db.execute("INSERT INTO outbox (incident_id, kind, note_key, version, payload, state, due_ns, "
                           "created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (incident_id, NOTE, note_key, version, json.dumps(payload), PENDING, due_ns, due_ns))
            except sqlite3.IntegrityError:
                return False
        return True

    def next_due(self, now_ns: int, limit: int = 20) -> list[Entry]:
        """Pending rows in seq order. A row not yet due holds back the later rows of the same
        incident (a note must not overtake the message it replies to)."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT seq, incident_id, kind, note_key, version, payload, attempts, due_ns, uncertain "
                              "FROM outbox WHERE state = ? ORDER BY seq LIMIT ?", (PENDING, limit * 5)).fetchall()
        due, blocked = [], set()
        for seq, incident_id, kind, note_key, version, payload, attempts, due_ns, uncertain in rows:
            if incident_id in blocked:
                continue
            if due_ns > now_ns:
                blocked.add(incident_id)
                continue
            due.append(Entry(seq, incident_id, kind, note_key, version, json.loads(payload), attempts, due_ns,
                             bool(uncertain)))
            blocked.add(incident_id)  # one row per incident per round, in order
            if len(due) >= limit:
                break
        return due

    def pending_count(self) -> int:
        with self.store.transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE state = ?", (PENDING,)).fetchone()[0])

    def begin_attempt(self, seq: int) -> None:
        """Marked before the call: if we crash or time out, the next attempt looks first."""
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, uncertain = 1 WHERE seq = ?", (seq,))

    def refused(self, seq: int) -> None:
        """Slack answered with an error: that attempt certainly delivered nothing."""
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET uncertain = 0 WHERE seq = ?", (seq,))

    def done(self, entry: Entry) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET state = ?, last_error = NULL WHERE seq = ?", (DONE, entry.seq))
            db.execute("DELETE FROM outbox WHERE state IN (?, ?) AND seq < (SELECT MAX(seq) FROM outbox) - ?",
                       (DONE, DEAD, KEEP_DONE))

    def retry_later(self, entry: Entry, due_ns: int, error: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET due_ns = ?, last_error = ? WHERE seq = ?", (due_ns, error[:500], entry.seq))

    def dead(self, entry: Entry, error: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE outbox SET state = ?, last_error = ? WHERE seq = ?", (DEAD, error[:500], entry.seq))

    def counts(self) -> dict[str, int]:
        with self.store.transaction() as db:
            return {state: n for state, n in db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")}

    # ---- where each incident's message lives ----
    def message_ref(self, incident_id: str) -> SlackMessageRef | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT incident_id, channel, ts, delivered_version, notified_at_ns FROM slack_messages "
                             "WHERE incident_id = ?", (incident_id,)).fetchone()
        return SlackMessageRef(*row) if row else None

    def save_message_ref(self, ref: SlackMessageRef) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO slack_messages VALUES (?, ?, ?, ?, ?) ON CONFLICT(incident_id) DO UPDATE SET "
                       "channel = excluded.channel, ts = excluded.ts, delivered_version = excluded.delivered_version, "
                       "notified_at_ns = excluded.notified_at_ns",
                       (ref.incident_id, ref.channel, ref.ts, ref.delivered_version, ref.notified_at_ns))

    def refs_notified_before(self, before_ns: int, limit: int = 500) -> list[SlackMessageRef]:
        """Messages of still-open incidents last notified before before_ns (for reminders)."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT m.incident_id, m.channel, m.ts, m.delivered_version, m.notified_at_ns "
                              "FROM slack_messages m JOIN incidents i ON i.id = m.incident_id "
                              "WHERE i.status = 'open' AND m.notified_at_ns < ? ORDER BY m.notified_at_ns LIMIT ?",
                              (before_ns, limit)).fetchall()
        return [SlackMessageRef(*row) for row in rows]

    def has_message_or_pending(self, incident_id: str) -> bool:
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM slack_messages WHERE incident_id = ?", (incident_id,)).fetchone():
                return True
            return db.execute("SELECT 1 FROM outbox WHERE incident_id = ? AND kind = ? AND state = ?",
                              (incident_id, MESSAGE, PENDING)).fetchone() is not None
