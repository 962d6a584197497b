"""Silences, as in Alertmanager: mute notifications for matching incidents until a time.

A silence matches on any of type, service, route, severity (exact values; omitted means
any). Silenced incidents are still detected, analyzed and recorded; only notifiers skip
them. Silences live in the store, so the CLI can add one without a running server and
the server sees it within SILENCE_CACHE_S.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from otel_ai.model import Incident
from otel_ai.store import IncidentStore
from otel_ai.timefmt import NS_PER_S, rfc3339

MATCHER_FIELDS = ("type", "service", "route", "severity")
SILENCE_CACHE_S = 2.0
MAX_ACTIVE = 1_000


class SilenceError(ValueError):
    """A silence request that cannot be honoured; the message says why."""


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: dict[str, str]
    starts_at_ns: int
    ends_at_ns: int
    created_by: str
    comment: str

    def matches(self, incident: Incident, now_ns: int) -> bool:
        if not self.starts_at_ns <= now_ns < self.ends_at_ns:
            return False
        values = {"type": incident.type, "service": incident.subject.service, "route": incident.subject.route,
                  "severity": incident.severity}
        return all(values[field] == wanted for field, wanted in self.matchers.items())

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": self.matchers, "starts_at": rfc3339(self.starts_at_ns),
                "ends_at": rfc3339(self.ends_at_ns), "created_by": self.created_by, "comment": self.comment}


class Silences:
    def __init__(self, store: IncidentStore, clock_ns=time.time_ns) -> None:
        self.store = store
        self.clock_ns = clock_ns
        self._cache: list[Silence] = []
        self._cached_at = -1.0
        self._lock = threading.Lock()

    def add(self, matchers: dict[str, str], duration_s: float, created_by: str, comment: str) -> Silence:
        unknown = sorted(set(matchers) - set(MATCHER_FIELDS))
        if unknown:
            raise SilenceError(f"unknown matcher(s) {unknown}; use {', '.join(MATCHER_FIELDS)}")
        matchers = {k: str(v) for k, v in matchers.items() if v not in (None, "")}
        if not matchers:
            raise SilenceError("a silence needs at least one matcher (type, service, route or severity)")
        if not 0 < duration_s <= 30 * 86_400:
            raise SilenceError("duration must be between 1s and 30d")
        if not comment.strip():
            raise SilenceError("say why in a comment, so whoever is on call next knows")
        now = self.clock_ns()
        silence = Silence("sil_" + secrets.token_hex(6), matchers, now, now + int(duration_s * NS_PER_S),
                          created_by[:100], comment[:500])
        with self.store.transaction() as db:
            active = db.execute("SELECT COUNT(*) FROM silences WHERE ends_at_ns > ?", (now,)).fetchone()[0]
            if active >= MAX_ACTIVE:
                raise SilenceError(f"{MAX_ACTIVE} silences are active already; expire some first")
            db.execute("INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?)",
                       (silence.id, json.dumps(silence.matchers), silence.starts_at_ns, silence.ends_at_ns,
                        silence.created_by, silence.comment))
        self._cached_at = -1.0
        return silence

    def expire(self, silence_id: str) -> bool:
        now = self.clock_ns()
        with self.store.transaction() as db:
            changed = db.execute("UPDATE silences SET ends_at_ns = ? WHERE id = ? AND ends_at_ns > ?",
                                 (now, silence_id, now)).rowcount
        self._cached_at = -1.0
        return changed > 0

    def list(self, include_expired: bool = False) -> list[Silence]:
        now = self.clock_ns()
        where = "" if include_expired else "WHERE ends_at_ns > ?"
        with self.store.transaction() as db:
            rows = db.execute(f"SELECT * FROM silences {where} ORDER BY starts_at_ns DESC LIMIT 1000",
                              () if include_expired else (now,)).fetchall()
        return [Silence(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def silencing(self, incident: Incident) -> Silence | None:
        """The active silence that matches incident, if any (cached briefly: called per change)."""
        now = self.clock_ns()
        with self._lock:
            if time.monotonic() - self._cached_at > SILENCE_CACHE_S:
                self._cache = self.list()
                self._cached_at = time.monotonic()
            active = self._cache
        return next((s for s in active if s.matches(incident, now)), None)
