"""The one interface every notifier implements, and how it reports failure.

A notifier only talks to its API. Everything else is shared and done once: the policy
(otel_ai/notify/policy.py) decides what to notify, when and to whom, and writes it to
the durable outbox; the delivery worker (otel_ai/notify/delivery.py) hands the
notifier its rows in order, retries, honours rate limits, and runs the exactly-once
protocol. A notifier answers three questions:

- `send(entry, ref)`: deliver one outbox row. `entry.kind` is "message" (bring the
  notification up to date with `entry.payload["incident"]`, a redacted snapshot, and
  `entry.payload["related"]`) or "note" (one event: `entry.payload["change"]` is
  analyzed, acknowledged, resolved, reopened, related or reminder). `ref` is what the
  last successful send for this notification returned (None before the first).
- `reconcile(entry, ref)`: an earlier attempt of this row may have been delivered (we
  crashed or timed out mid-call). Return None if it was not, or if sending it again is
  harmless (then it is sent); a Sent if it was (the row counts as delivered); raise
  Unknown when the notifier cannot tell yet (the row waits and asks again).
- `notifies`: True when it pages people, so AI_MODE=shadow and minConfidence hold its
  first notification back. It is part of the interface, not an optional attribute: a
  notifier without it fails at start-up instead of paging in shadow mode.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import requests

from otel_ai.notify.outbox import Entry

DEFAULT_RETRY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Sent:
    ref: dict[str, Any] | None  # saved for the next send of this notification; None keeps the old one
    created: bool = False  # this send made the notification (a first post, a trigger): its notify span
    more: bool = False  # the row needs another send (e.g. trigger, then acknowledge)
    detail: dict[str, Any] = field(default_factory=dict)  # for the notify span: where it went


class Refused(Exception):
    """The API answered and delivered nothing: retry later, or never when `permanent`."""

    def __init__(self, error: str, retry_after_s: float | None = None, permanent: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after_s = retry_after_s
        self.permanent = permanent


class Unknown(Exception):
    """No answer (timeout, connection lost mid-call): it may have been delivered."""


@runtime_checkable
class Notifier(Protocol):
    name: str  # "slack", "pagerduty", "webhook": outbox rows, routes, metrics and the banner use it
    notifies: bool

    def send(self, entry: Entry, ref: dict[str, Any] | None) -> Sent:
        ...

    def reconcile(self, entry: Entry, ref: dict[str, Any] | None) -> Sent | None:
        ...

    def shutdown(self) -> None:
        ...


def retry_after_s(headers: Any, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds from a Retry-After header (any mapping of header names, any case)."""
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            try:
                return max(1.0, float(value[0] if isinstance(value, list) else value))
            except ValueError:
                break
    return default


def http_post(session: requests.Session, url: str, timeout: float,
              describe: Callable[[requests.Response], str] = lambda r: r.reason, **kwargs: Any) -> requests.Response:
    """POST for notifiers on plain HTTP APIs: a 2xx response, or the failure classified the
    way delivery needs it (429 and 5xx retried, other 4xx permanent, no answer Unknown)."""
    try:
        response = session.post(url, timeout=timeout, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Unknown(f"{type(exc).__name__}: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status == 429:
        raise Refused("rate_limited", retry_after_s=retry_after_s(response.headers))
    detail = f"{status} {describe(response)}"
    raise Refused(detail, permanent=status < 500 and status != 408)
