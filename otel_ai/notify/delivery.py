"""Delivers the outbox to Slack, in order, exactly once, whatever Slack or we go through.

One worker thread takes due rows in seq order. A "message" row posts the incident's
message the first time and chat.update's it afterwards, always rendering the incident
as it is now in the store, so a backlog collapses to the latest state. A "note" row is
a reply in the message's thread.

Exactly once across a kill -9: each attempt is marked "uncertain" in SQLite before the
call and cleared when Slack answers with an error, and every message carries Slack
message metadata naming the incident (notes: the note). An uncertain row (we crashed
or timed out mid-call) first looks for its message in the channel history (or the
thread) and adopts it instead of posting again; if that search fails, it waits. Slack's rate limits are honoured by
slack_sdk's RateLimitErrorRetryHandler for short waits and by re-queuing for long ones.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from otel_ai.analysis.redact import redactor_from_settings
from otel_ai.config import Settings
from otel_ai.model import Incident
from otel_ai.notify.blocks import details_link, render_incident
from otel_ai.notify.outbox import MESSAGE, Entry, Outbox, SlackMessageRef
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore
from otel_ai.timefmt import NS_PER_S

log = logging.getLogger(__name__)

MESSAGE_EVENT = "otel_ai_incident"
NOTE_EVENT = "otel_ai_note"
# Errors that no retry can fix: wrong token, channel or payload. The row is parked as dead.
PERMANENT_ERRORS = {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope",
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "msg_too_long", "no_text",
    "restricted_action", "invalid_arguments", "message_not_found", "cant_update_message",
}
MAX_BACKOFF_S = 300.0
HISTORY_SCAN = 200  # messages looked through when recovering after a crash
REMINDER_CHECK_S = 30.0


def make_client(token: str, base_url: str | None = None, timeout_s: int = 10) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout_s)
    # Short 429 waits are slept inside the call; anything longer is handed back to the outbox.
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


class SlackDelivery:
    def __init__(self, settings: Settings, outbox: Outbox, store: IncidentStore, client: WebClient,
                 metrics: SelfMetrics | None = None, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.rules = settings.slack
        self.outbox = outbox
        self.store = store
        self.client = client
        self.metrics = metrics or SelfMetrics()
        self.clock_ns = clock_ns
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reminder_check = 0.0
        # Told about each first post (the notify step of the incident's trace).
        self.on_posted: Callable[[Incident, str, str, int], Any] | None = None
        # Slack is outside the process too: the same redaction as prompts get.
        self.redactor = redactor_from_settings(settings.analysis.redaction)

    # ---- worker ----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-ai-slack", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the worker must survive anything a round throws
                log.exception("Slack delivery round failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were handled."""
        now = self.clock_ns()
        if time.monotonic() - self._last_reminder_check >= min(REMINDER_CHECK_S, self.rules.repeat_interval / 2):
            self._last_reminder_check = time.monotonic()
            self.queue_reminders(now)
        handled = 0
        for entry in self.outbox.next_due(now):
            if self._stop.is_set():
                break
            self.deliver(entry)
            handled += 1
        self.metrics.outbox_pending.set(self.outbox.pending_count())
        return handled

    # ---- one row ----
    def deliver(self, entry: Entry) -> None:
        incident = self.store.get(entry.incident_id)
        if incident is None:
            self.outbox.dead(entry, "incident no longer in the store")
            return
        self.outbox.begin_attempt(entry.seq)
        method = "chat.update"
        try:
            if entry.kind == MESSAGE:
                method = self._sync_message(entry, incident)
            else:
                method = "chat.postMessage(thread)"
                if not self._post_note(entry, incident):
                    return  # re-queued: the message it replies to is not there yet
            self.outbox.done(entry)
            self.metrics.slack_calls.labels(method=method, result="ok").inc()
        except LookupFailed as exc:  # the earlier attempt stays uncertain
            self._failed(entry, "lookup", exc.error)
        except SlackApiError as exc:
            self.outbox.refused(entry.seq)
            self._failed(entry, method, exc)
        except (SlackClientError, OSError) as exc:  # connection refused, timeouts, TLS
            self.metrics.slack_calls.labels(method=method, result="error").inc()
            self._retry(entry, f"{type(exc).__name__}: {exc}")

    def _failed(self, entry: Entry, method: str, exc: SlackApiError) -> None:
        response = exc.response
        error = str(response.get("error") if response is not None else "") or "unknown_error"
        status = getattr(response, "status_code", 0)
        self.metrics.slack_calls.labels(method=method, result=error).inc()
        if status == 429 or error == "ratelimited":
            retry_after = _retry_after(response)
            log.warning("Slack rate limit on %s; retrying in %.0fs", method, retry_after)
            self.outbox.retry_later(entry, self.clock_ns() + int(retry_after * NS_PER_S), "ratelimited")
        elif error in PERMANENT_ERRORS:
            log.error("Slack refused %s for incident %s: %s; not retrying (check token, channel and scopes)",
                      method, entry.incident_id, error)
            self.outbox.dead(entry, error)
        else:
            self._retry(entry, f"{status} {error}")

    def _retry(self, entry: Entry, error: str) -> None:
        backoff = min(MAX_BACKOFF_S, 2.0 ** min(entry.attempts + 1, 10))
        log.warning("Slack delivery for incident %s failed (%s); retrying in %.0fs", entry.incident_id, error, backoff)
        self.outbox.retry_later(entry, self.clock_ns() + int(backoff * NS_PER_S), error)

    def _sync_message(self, entry: Entry, incident: Incident) -> str:
        snapshot = self.redactor.data(incident.snapshot())
        message = render_incident(snapshot, details_url=details_link(self.rules.details_url, snapshot),
                                  related=entry.payload.get("related") or None, now_ns=self.clock_ns())
        metadata = {"event_type": MESSAGE_EVENT,
                    "event_payload": {"incident_id": incident.id, "version": incident.version}}
        ref = self.outbox.message_ref(incident.id)
        channel = self.rules.channel_for(incident.severity)
        if ref is None and entry.uncertain and channel:
            ref = self._find_posted(channel, incident.id)
        if ref is None:
            if not channel:
                raise SlackApiError("no channel", _Missing("channel_not_found"))
            response = self.client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks,
                                                    metadata=metadata, unfurl_links=False)
            now = self.clock_ns()
            self.outbox.save_message_ref(SlackMessageRef(incident.id, response["channel"], response["ts"],
                                                         incident.version, now))
            if self.on_posted is not None:
                self.on_posted(incident, response["channel"], response["ts"], now)
            return "chat.postMessage"
        self.client.chat_update(channel=ref.channel, ts=ref.ts, text=message.text, blocks=message.blocks,
                                metadata=metadata)
        self.outbox.save_message_ref(SlackMessageRef(ref.incident_id, ref.channel, ref.ts, incident.version,
                                                     ref.notified_at_ns))
        return "chat.update"

    def _post_note(self, entry: Entry, incident: Incident) -> bool:
        ref = self.outbox.message_ref(incident.id)
        if ref is None:
            self.outbox.retry_later(entry, self.clock_ns() + 2 * NS_PER_S, "waiting for the incident message")
            return False
        if entry.uncertain and self._note_posted(ref, entry.note_key):
            return True
        self.client.chat_postMessage(
            channel=ref.channel, thread_ts=ref.ts, text=entry.payload.get("text", ""),
            reply_broadcast=bool(entry.payload.get("broadcast")),
            metadata={"event_type": NOTE_EVENT, "event_payload": {"incident_id": incident.id,
                                                                  "note_key": entry.note_key}})
        return True

    # ---- crash recovery: was it delivered before we could record it? ----
    def _find_posted(self, channel: str, incident_id: str) -> SlackMessageRef | None:
        """The incident's message if an earlier attempt posted it. A failed search raises
        (and the row is retried): posting blind could post twice."""
        try:
            response = self.client.conversations_history(channel=channel, include_all_metadata=True,
                                                         limit=HISTORY_SCAN)
        except SlackApiError as exc:
            raise LookupFailed(exc) from None
        for message in response.get("messages", []):
            payload = _metadata(message, MESSAGE_EVENT)
            if payload.get("incident_id") == incident_id:
                ref = SlackMessageRef(incident_id, response.get("channel") or channel, message["ts"],
                                      int(payload.get("version", 0)), self.clock_ns())
                self.outbox.save_message_ref(ref)
                log.info("incident %s: adopted message %s posted before a restart", incident_id, ref.ts)
                return ref
        return None

    def _note_posted(self, ref: SlackMessageRef, note_key: str) -> bool:
        try:
            response = self.client.conversations_replies(channel=ref.channel, ts=ref.ts, include_all_metadata=True,
                                                         limit=HISTORY_SCAN)
        except SlackApiError as exc:
            raise LookupFailed(exc) from None
        return any(_metadata(m, NOTE_EVENT).get("note_key") == note_key for m in response.get("messages", []))

    # ---- repeat_interval ----
    def queue_reminders(self, now_ns: int) -> int:
        """Open, unacknowledged incidents notified longer than repeat_interval ago get a
        reminder in their thread, broadcast to the channel."""
        interval_ns = int(self.rules.repeat_interval * NS_PER_S)
        queued = 0
        for ref in self.outbox.refs_notified_before(now_ns - interval_ns):
            incident = self.store.get(ref.incident_id)
            if incident is None or incident.status != "open":
                continue
            hours = (now_ns - incident.opened_at_ns) / 3600 / NS_PER_S
            age = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
            if self.outbox.put_note(ref.incident_id, f"reminder:{now_ns // max(interval_ns, 1)}", incident.version,
                                    now_ns, {"text": f"⏰ Still open and not acknowledged after {age}",
                                             "broadcast": True}):
                queued += 1
            self.outbox.save_message_ref(SlackMessageRef(ref.incident_id, ref.channel, ref.ts,
                                                         ref.delivered_version, now_ns))
        return queued


class LookupFailed(Exception):
    """Searching Slack for an earlier delivery failed; whether it happened is still unknown."""

    def __init__(self, error: SlackApiError) -> None:
        super().__init__(str(error))
        self.error = error


class _Missing(dict):
    """A stand-in SlackResponse for configuration errors found before any call."""

    def __init__(self, error: str) -> None:
        super().__init__(ok=False, error=error)
        self.status_code = 0


def _metadata(message: dict[str, Any], event_type: str) -> dict[str, Any]:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event_type:
        return {}
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, dict) else {}


def _retry_after(response: Any) -> float:
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(1.0, float(value[0] if isinstance(value, list) else value))
            except ValueError:
                break
    return 5.0
