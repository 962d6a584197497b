"""The durable notification outbox, in the incident store's SQLite file, for every notifier.

The notification policy writes a row in the same step that decides it; each notifier's
delivery worker sends its own rows in `seq` order and marks one done only after the
notifier's API accepted it. So a crash or an outage loses nothing (at least once), and
the delivery protocol makes it exactly once (otel_ai/notify/delivery.py): an attempt is
marked uncertain before the call, and an uncertain row is reconciled before it is sent
again.

Two kinds of row, keyed by (notifier, notification key). The key is the incident id of
the notification's lead incident today (see otel_ai/notify/cause.py):
- "message": bring the notification up to date with the payload. One pending row per
  key: while a notifier is down, updates collapse into it, latest state wins.
- "note": one event on the notification (a Slack thread reply, a reminder), unique per
  note key, so a retry after a crash cannot queue it twice.

`notifications` remembers what each notifier returned for a key (its ref: Slack's
channel and ts, PagerDuty's last action) and when it last notified (for reminders).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from otel_ai.store import IncidentStore

MESSAGE = "message"
NOTE = "note"

PENDING, DONE, DEAD = "pending", "done", "dead"
KEEP_DONE = 5_000  # delivered (and undeliverable) rows kept for inspection; older ones are pruned


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    notifier: str
    incident_id: str  # the notification key
    kind: str
    note_key: str
    version: int
    payload: dict[str, Any]
    attempts: int
    due_ns: int
    uncertain: bool  # an earlier attempt may have been delivered (crash, timeout): reconcile first


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier keeps about one notification it made."""

    notifier: str
    incident_id: str
    ref: dict[str, Any]
    delivered_version: int
    notified_at_ns: int


class Outbox:
    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    # ---- written by the policy ----
    def put_message(self, notifier: str, incident_id: str, version: int, due_ns: int, payload: dict[str, Any]) -> None:
        """Queue (or collapse into the pending) update of the notification."""
        with self.store.transaction() as db:
            row = db.execute("SELECT seq FROM outbox WHERE notifier = ? AND incident_id = ? AND kind = ? AND state = ?",
                             (notifier, incident_id, MESSAGE, PENDING)).fetchone()
            if row is None:
                db.execute("INSERT INTO outbox (notifier, incident_id, kind, version, payload, state, due_ns, created_ns) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (notifier, incident_id, MESSAGE, version, json.dumps(payload), PENDING, due_ns, due_ns))
            else:
                # Keep its seq (its place in line) and its due time: an update during group_wait or
                # a rate limit's Retry-After does not send it any sooner.
                db.execute("UPDATE outbox SET version = MAX(version, ?), payload = ? WHERE seq = ?",
                           (version, json.dumps(payload), row[0]))

    def put_note(self, notifier: str, incident_id: str, note_key: str, version: int, due_ns: int,
                 payload: dict[str, Any]) -> bool:
        """Queue one event on the notification; False if that note was queued before (idempotent)."""
        with self.store.transaction() as db:
            try:
                db.execute("INSERT INTO outbox (notifier, incident_id, kind, note_key, version, payload, state, due_ns, "
                           "created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (notifier, incident_id, NOTE, note_key, version, json.dumps(payload), PENDING, due_ns,
                            due_ns))
            except sqlite3.IntegrityError:
                return False
        return True

    def has_notification(self, notifier: str, incident_id: str) -> bool:
        """Delivered, or queued and not yet given up on."""
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM notifications WHERE notifier = ? AND incident_id = ?",
                          (notifier, incident_id)).fetchone():
                return True
            return db.execute("SELECT 1 FROM outbox WHERE notifier = ? AND incident_id = ? AND kind = ? AND state = ?",
                              (notifier, incident_id, MESSAGE, PENDING)).fetchone() is not None

    def withdraw(self, notifier: str, incident_id: str) -> bool:
        """Take back a notification nothing of which can have been delivered yet (a new lead
        took its place during group_wait): never sent, or only refused by the API. False,
        and nothing changed, when that is too late or cannot be told."""
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM notifications WHERE notifier = ? AND incident_id = ?",
                          (notifier, incident_id)).fetchone():
                return False
            if db.execute("SELECT 1 FROM outbox WHERE notifier = ? AND incident_id = ? AND (uncertain = 1 OR state != ?)",
                          (notifier, incident_id, PENDING)).fetchone():
                return False
            db.execute("DELETE FROM outbox WHERE notifier = ? AND incident_id = ?", (notifier, incident_id))
        return True

    # ---- read and updated by delivery ----
    def next_due(self, notifier: str, now_ns: int, limit: int = 20) -> list[Entry]:
        """The notifier's pending rows in seq order. A row not yet due holds back the later rows
        of the same key (a note must not overtake the message it belongs to)."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT seq, notifier, incident_id, kind, note_key, version, payload, attempts, due_ns, "
                              "uncertain FROM outbox WHERE notifier = ? AND state = ? ORDER BY seq LIMIT ?",
                              (notifier, PENDING, limit * 5)).fetchall()
        due, blocked = [], set()
        for seq, name, incident_id, kind, note_key, version, payload, attempts, due_ns, uncertain in rows:
            if incident_id in blocked:
                continue
            blocked.add(incident_id)  # one row per key per round, in order
            if due_ns > now_ns:
                continue
            due.append(Entry(seq, name, incident_id, kind, note_key, version, json.loads(payload), attempts, due_ns,
                             bool(uncertain)))
            if len(due) >= limit:
                break
        return due

    def pending_count(self, notifier: str | None = None) -> int:
        where, params = ("AND notifier = ?", (notifier,)) if notifier else ("", ())
        with self.store.transaction() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM outbox WHERE state = ? {where}",
                                  (PENDING, *params)).fetchone()[0])

    def begin_attempt(self, seq: int) -> bool:
        """Marked before the call: if we crash or time out, the next attempt reconciles first.
        False if the row is no longer pending (withdrawn meanwhile): send nothing."""
        with self.store.transaction() as db:
            return db.execute("UPDATE outbox SET attempts = attempts + 1, uncertain = 1 WHERE seq = ? AND state = ?",
                              (seq, PENDING)).rowcount == 1

    def refused(self, seq: int) -> None:
        """The API answered with an error: that attempt certainly delivered nothing."""
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

    def counts(self, notifier: str | None = None) -> dict[str, int]:
        where, params = ("WHERE notifier = ?", (notifier,)) if notifier else ("", ())
        with self.store.transaction() as db:
            return {state: n for state, n in
                    db.execute(f"SELECT state, COUNT(*) FROM outbox {where} GROUP BY state", params)}

    # ---- what each notifier made of each notification ----
    def notification(self, notifier: str, incident_id: str) -> Notification | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT notifier, incident_id, ref, delivered_version, notified_at_ns FROM notifications "
                             "WHERE notifier = ? AND incident_id = ?", (notifier, incident_id)).fetchone()
        return _notification(row) if row else None

    def save_notification(self, n: Notification) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO notifications VALUES (?, ?, ?, ?, ?) ON CONFLICT(notifier, incident_id) DO UPDATE "
                       "SET ref = excluded.ref, delivered_version = excluded.delivered_version, "
                       "notified_at_ns = excluded.notified_at_ns",
                       (n.notifier, n.incident_id, json.dumps(n.ref), n.delivered_version, n.notified_at_ns))

    def notified_before(self, notifier: str, before_ns: int, limit: int = 500) -> list[Notification]:
        """Notifications of still-open incidents or problems (keyed by the problem's id) last
        notified before before_ns (for reminders)."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT n.notifier, n.incident_id, n.ref, n.delivered_version, n.notified_at_ns "
                              "FROM notifications n WHERE n.notifier = ? AND n.notified_at_ns < ? AND ("
                              "EXISTS (SELECT 1 FROM incidents i WHERE i.id = n.incident_id AND i.status = 'open') OR "
                              "EXISTS (SELECT 1 FROM incidents i WHERE i.problem_id = n.incident_id AND i.status = 'open'))"
                              "ORDER BY n.notified_at_ns LIMIT ?", (notifier, before_ns, limit)).fetchall()
        return [_notification(row) for row in rows]

    def touch(self, notifier: str, incident_id: str, notified_at_ns: int) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE notifications SET notified_at_ns = ? WHERE notifier = ? AND incident_id = ?",
                       (notified_at_ns, notifier, incident_id))


def _notification(row) -> Notification:
    notifier, incident_id, ref, version, at = row
    return Notification(notifier, incident_id, json.loads(ref), version, at)
