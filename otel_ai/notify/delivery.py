"""Delivers one notifier's outbox rows, in order, exactly once, whatever the API or we go through.

One worker thread per notifier takes its due rows in seq order and hands each to the
notifier (notifiers/base.py). The protocol, the same for every notifier:

- Before the call the row is marked uncertain in SQLite; when the API answers with an
  error (Refused) the mark is cleared, as nothing was delivered.
- An uncertain row (we were killed or timed out mid-call) is reconciled before it is
  sent again: the notifier looks for what the earlier attempt did (Slack searches the
  channel for the message's metadata) or says a resend is harmless (PagerDuty's
  dedup_key, the webhook's Idempotency-Key). If it cannot tell yet, the row waits.
- Rate limits and outages re-queue the row (Retry-After honoured); permanent errors
  (bad token, unknown channel, invalid payload) park it as undeliverable, logged.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from otel_ai.notify.outbox import Entry, Notification, Outbox
from otel_ai.notifiers.base import Notifier, Refused, Sent, Unknown
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.timefmt import NS_PER_S

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
POLL_S = 0.5


class Delivery:
    def __init__(self, notifier: Notifier, outbox: Outbox, metrics: SelfMetrics | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.notifier = notifier
        self.name = notifier.name
        self.outbox = outbox
        self.metrics = metrics or SelfMetrics()
        self.clock_ns = clock_ns
        # Told about each notification a notifier makes (the notify step of the incident's trace).
        self.on_created: Callable[[str, dict[str, Any], dict[str, Any], int], Any] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"otel-ai-deliver-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """What is left stays in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue  # a round takes one row per notification: go on while rows keep coming
            except Exception:  # the worker must survive anything a round throws
                log.exception("%s delivery round failed", self.name)
            self._wake.wait(POLL_S)
            self._wake.clear()

    def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were handled."""
        handled = 0
        for entry in self.outbox.next_due(self.name, self.clock_ns()):
            if self._stop.is_set():
                break
            self.deliver(entry)
            handled += 1
        self.metrics.outbox_pending.labels(notifier=self.name).set(self.outbox.pending_count(self.name))
        return handled

    def deliver(self, entry: Entry) -> None:
        if not self.outbox.begin_attempt(entry.seq):
            return  # withdrawn by the policy meanwhile
        known = self.outbox.notification(self.name, entry.incident_id)
        ref = known.ref if known else None
        try:
            sent = self.notifier.reconcile(entry, ref) if entry.uncertain else None
            if sent is not None:
                log.info("%s: an earlier attempt of %s %s had been delivered; adopted it", self.name, entry.kind,
                         entry.incident_id)
            while sent is None or sent.more:
                if sent is not None:
                    ref = self._record(entry, known, sent)
                    known = self.outbox.notification(self.name, entry.incident_id)
                sent = self.notifier.send(entry, ref)
            self._record(entry, known, sent)
            self.outbox.done(entry)
            self.metrics.notifier_calls.labels(notifier=self.name, result="ok").inc()
        except Refused as exc:
            self.outbox.refused(entry.seq)
            self._refused(entry, exc)
        except Unknown as exc:  # stays uncertain: the next attempt reconciles first
            self.metrics.notifier_calls.labels(notifier=self.name, result="unknown").inc()
            self._retry(entry, f"no answer: {exc}")

    def _record(self, entry: Entry, known: Notification | None, sent: Sent) -> dict[str, Any] | None:
        """Save the notifier's ref for the notification; returns the ref now in force."""
        ref = sent.ref if sent.ref is not None else (known.ref if known else None)
        if ref is None:
            return None
        now = self.clock_ns()
        notified_at = known.notified_at_ns if known and not sent.created else now
        version = max(entry.version, known.delivered_version if known else 0)
        self.outbox.save_notification(Notification(self.name, entry.incident_id, ref, version, notified_at))
        if sent.created and self.on_created is not None:
            snapshot = entry.payload.get("incident") or {}
            try:
                self.on_created(self.name, snapshot, sent.detail, now)
            except Exception:
                log.exception("reporting the %s notification of %s failed", self.name, entry.incident_id)
        return ref

    def _refused(self, entry: Entry, exc: Refused) -> None:
        self.metrics.notifier_calls.labels(notifier=self.name, result=exc.error[:60]).inc()
        if exc.permanent:
            log.error("%s refused %s for incident %s: %s; not retrying (check its token, target and payload)",
                      self.name, entry.kind, entry.incident_id, exc.error)
            self.outbox.dead(entry, exc.error)
        elif exc.retry_after_s is not None:
            log.warning("%s rate limit; retrying in %.0fs", self.name, exc.retry_after_s)
            self.outbox.retry_later(entry, self.clock_ns() + int(exc.retry_after_s * NS_PER_S), exc.error)
        else:
            self._retry(entry, exc.error)

    def _retry(self, entry: Entry, error: str) -> None:
        backoff = min(MAX_BACKOFF_S, 2.0 ** min(entry.attempts + 1, 10))
        log.warning("%s delivery for incident %s failed (%s); retrying in %.0fs", self.name, entry.incident_id, error,
                    backoff)
        self.outbox.retry_later(entry, self.clock_ns() + int(backoff * NS_PER_S), error)
