"""Slack: one message per incident for its whole life, updated in place, its timeline in the thread.

A "message" row posts the incident's message the first time (chat.postMessage) and
chat.update's it afterwards, rendered whole from the snapshot in the row, in the seed's
Block Kit layout (otel_ai/notify/blocks.py). A "note" row is a reply in its thread:
analysis ready, acknowledged by, resolved, reopened, a related incident, a reminder
(broadcast to the channel).

Every message carries Slack message metadata naming its incident (notes: the note), so
after a crash mid-call `reconcile` finds what the earlier attempt posted in the channel
history (or the thread) and adopts it instead of posting twice. Short rate-limit waits
are slept by slack_sdk's RateLimitErrorRetryHandler; longer ones go back to the outbox.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from otel_ai.config import Settings
from otel_ai.notify.blocks import details_link, render_incident, render_thread_note
from otel_ai.notify.outbox import MESSAGE, Entry
from otel_ai.notifiers.base import Refused, Sent, Unknown, retry_after_s
from otel_ai.timefmt import NS_PER_S, parse_rfc3339

MESSAGE_EVENT = "otel_ai_incident"
NOTE_EVENT = "otel_ai_note"
# Errors that no retry can fix: wrong token, channel or payload. The row is parked as dead.
PERMANENT_ERRORS = {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope",
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "msg_too_long", "no_text",
    "restricted_action", "invalid_arguments", "message_not_found", "cant_update_message",
}
HISTORY_SCAN = 200  # messages looked through when reconciling after a crash
NOTE_RETRY_S = 2.0


def make_client(token: str, base_url: str | None = None, timeout_s: int = 10) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout_s)
    # Short 429 waits are slept inside the call; anything longer is handed back to the outbox.
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


class SlackNotifier:
    name = "slack"
    notifies = True

    def __init__(self, settings: Settings, client: WebClient, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.rules = settings.slack
        self.client = client
        self.clock_ns = clock_ns

    def send(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        try:
            return self._message(entry, ref) if entry.kind == MESSAGE else self._note(entry, ref)
        except SlackApiError as exc:
            raise _refused(exc) from None
        except (SlackClientError, OSError) as exc:  # connection refused, timeouts, TLS
            raise Unknown(f"{type(exc).__name__}: {exc}") from None

    def reconcile(self, entry: Entry, ref: dict[str, Any] | None) -> Sent | None:
        try:
            if entry.kind == MESSAGE:
                if ref is not None:
                    return None  # an update: sending it again is harmless
                found = self._find_posted(entry)
                # Adopt it, then bring it up to date with this row.
                return Sent(found, created=True, more=True, detail=_detail(found)) if found else None
            if ref is not None and self._note_posted(ref, entry):
                return Sent(None)
            return None
        except SlackApiError as exc:  # the search failed: whether it was posted is still unknown
            raise Unknown(f"lookup failed: {exc.response.get('error') if exc.response else exc}") from None
        except (SlackClientError, OSError) as exc:
            raise Unknown(f"lookup failed: {type(exc).__name__}: {exc}") from None

    def shutdown(self) -> None:
        pass

    # ---- the incident's message ----
    def _message(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        snapshot = entry.payload.get("incident") or {}
        message = render_incident(snapshot, details_url=details_link(self.rules.details_url, snapshot),
                                  related=entry.payload.get("related") or None, now_ns=self.clock_ns())
        metadata = {"event_type": MESSAGE_EVENT,
                    "event_payload": {"incident_id": entry.incident_id, "version": entry.version}}
        if ref is None:
            channel = self.rules.channel_for(str(snapshot.get("severity")))
            if not channel:
                raise Refused("channel_not_found", permanent=True)
            response = self.client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks,
                                                    metadata=metadata, unfurl_links=False)
            posted = {"channel": response["channel"], "ts": response["ts"]}
            return Sent(posted, created=True, detail=_detail(posted))
        self.client.chat_update(channel=ref["channel"], ts=ref["ts"], text=message.text, blocks=message.blocks,
                                metadata=metadata)
        return Sent(None)

    # ---- one reply in its thread ----
    def _note(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        if ref is None:
            raise Refused("waiting for the incident message", retry_after_s=NOTE_RETRY_S)
        change = str(entry.payload.get("change") or "")
        self.client.chat_postMessage(
            channel=ref["channel"], thread_ts=ref["ts"], text=self._note_text(change, entry.payload),
            reply_broadcast=change == "reminder",
            metadata={"event_type": NOTE_EVENT, "event_payload": {"incident_id": entry.incident_id,
                                                                  "note_key": entry.note_key}})
        return Sent(None)

    def _note_text(self, change: str, payload: dict[str, Any]) -> str:
        snapshot = payload.get("incident") or {}
        if change == "reminder":
            opened = _opened_ns(snapshot)
            hours = (self.clock_ns() - opened) / 3600 / NS_PER_S if opened else 0.0
            age = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
            return f"⏰ Still open and not acknowledged after {age}"
        if change == "related":
            return f"🔗 Related: {render_thread_note(str(payload.get('member_change')), snapshot)}"
        return render_thread_note(change, snapshot, user=payload.get("user"))

    # ---- reconciling after a crash ----
    def _find_posted(self, entry: Entry) -> dict[str, Any] | None:
        """The incident's message if an earlier attempt posted it."""
        snapshot = entry.payload.get("incident") or {}
        channel = self.rules.channel_for(str(snapshot.get("severity")))
        if not channel:
            return None
        response = self.client.conversations_history(channel=channel, include_all_metadata=True, limit=HISTORY_SCAN)
        for message in response.get("messages", []):
            if _metadata(message, MESSAGE_EVENT).get("incident_id") == entry.incident_id:
                return {"channel": response.get("channel") or channel, "ts": message["ts"]}
        return None

    def _note_posted(self, ref: dict[str, Any], entry: Entry) -> bool:
        response = self.client.conversations_replies(channel=ref["channel"], ts=ref["ts"], include_all_metadata=True,
                                                     limit=HISTORY_SCAN)
        return any(_metadata(m, NOTE_EVENT).get("note_key") == entry.note_key for m in response.get("messages", []))


def _refused(exc: SlackApiError) -> Refused:
    response = exc.response
    error = str(response.get("error") if response is not None else "") or "unknown_error"
    status = getattr(response, "status_code", 0)
    if status == 429 or error == "ratelimited":
        return Refused("ratelimited", retry_after_s=retry_after_s(getattr(response, "headers", None)))
    return Refused(error, permanent=error in PERMANENT_ERRORS)


def _detail(ref: dict[str, Any]) -> dict[str, Any]:
    return {"messaging.system": "slack", "messaging.destination.name": ref["channel"], "slack.message.ts": ref["ts"]}


def _opened_ns(snapshot: dict[str, Any]) -> int | None:
    try:
        return parse_rfc3339(snapshot.get("opened_at"))
    except (TypeError, ValueError):
        return None


def _metadata(message: dict[str, Any], event_type: str) -> dict[str, Any]:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event_type:
        return {}
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, dict) else {}
