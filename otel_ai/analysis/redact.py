"""Redact secrets and PII from incident evidence before it leaves the process.

Span attribute values, exception messages, URLs and tenant ids are untrusted
telemetry, and all of it may be sent to the Claude API. Anyone who can make a
service emit a span can choose these strings, so every value is capped to a fixed
size before any regex runs, the regexes are written so their work stays linear in
that capped size, and secrets are replaced with typed markers such as
``[REDACTED:email]`` so the analysis still knows what kind of thing was there.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
TRUNCATED = "[TRUNCATED]"

DEFAULT_DENY_KEYS: tuple[str, ...] = (
    "password", "passwd", "secret", "token", "authorization", "cookie", "api_key",
    "apikey", "api-key", "credential", "private_key", "session", "x-api-key", "card", "ssn",
)
DEFAULT_ALLOW_KEYS: tuple[str, ...] = (
    "service.name", "service.version", "k8s.pod.name", "k8s.node.name",
    "k8s.namespace.name", "host.name", "deployment.environment", "cloud.region",
    "cloud.availability_zone", "http.route", "http.request.method", "rpc.method",
    "rpc.service", "dependency.failed", "dependency.slow", "service.instance.id",
    "exception.type",
)

# Who sent a request (addresses, user ids) leaves the process only as a keyed hash:
# stable within one otel-ai process, so suspects and distinct counts still work, but not
# reversible (every IPv4 address could be tried against a plain hash; the key never
# leaves the process). Decode hashes them when it captures a request; the redactor
# hashes any that reach it raw.
PSEUDONYMIZED_KEYS = frozenset({"client.address", "http.client_ip", "source.address", "enduser.id", "user.id"})
PSEUDONYM_PREFIX = "hash:"
_PSEUDONYM_KEY = secrets.token_bytes(16)
_PSEUDONYM = re.compile(r"^hash:[0-9a-f]{12}$")

MAX_NODES = 10_000
MAX_DEPTH = 20
# Secrets that straddle the cap are still recognised (and then dropped whole rather
# than cut in half) because the regexes see this many characters past it.
_LOOKAHEAD = 64

_API_KEY = re.compile(
    # Every branch starts with a literal, so the engine skips ahead to candidate
    # characters instead of trying each alternative at every position.
    r"sk-ant-[A-Za-z0-9_-]{8,}"
    r"|sk-[A-Za-z0-9_-]{17,}"
    r"|sk_(?:live|test)_[A-Za-z0-9]{8,}"
    r"|rk_(?:live|test)_[A-Za-z0-9]{8,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|ASIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
)
# Unsigned or cut-off JWTs still carry the claims, so the signature is optional.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")
_BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]+=*)")
_BASIC = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{4,}=*)")
_AUTH_HEADER = re.compile(
    r"(?i)\bauthorization\\*[\"']?\s*[:=]\s*\\*[\"']?"
    r"(?:(?:bearer|basic|digest|token|negotiate|ntlm|aws4-hmac-sha256)\s+)?([^\s\"',;\\]+)"
)
# Password in the userinfo of a URL; the greedy run backs off to the last '@'
# before the path, the same split a URL parser makes.
_URL_PASSWORD = re.compile(r"://[^\s/?#@:]*:([^\s/?#]*)@")
_SECRET_KV = re.compile(
    r"(?i)(?<![a-z0-9])"
    r"(?:passw(?:or)?d|pwd|token|secret|api[_-]?key|auth|signature|sig|private[_-]?key|access[_-]?key)"
    r"\\*[\"']?\s*[:=]\s*"
    r"(?:\\*\"([^\"]*)|\\*'([^']*)|([^\s\"'&,;]+))"
)
_KV_HINTS = ("pass", "pwd", "token", "secret", "key", "auth", "sig")
# Starts only at the beginning of a run of local-part characters, so a long run that
# is not an email is scanned once, not once per position.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}"
)
# Runs of 13+ ASCII digits with single space/dash separators; which sub-runs are
# cards is decided by _card_spans (length, issuer digit, Luhn).
_DIGIT_RUN = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_PEM = re.compile(
    r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----(?:.*?-----END [A-Z ]{0,40}PRIVATE KEY-----|.*)", re.DOTALL
)
_WORDISH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_MARKERS = {
    kind: f"[REDACTED:{kind}]"
    for kind in ("email", "card", "bearer", "api_key", "jwt", "url_password", "secret")
}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    # Issuers' first digits are 2-6; this keeps ms/ns timestamps (leading 1) that
    # happen to pass Luhn out of the redactions.
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits)


def _card_spans(s: str, run_start: int, run_end: int) -> Iterable[tuple[int, int]]:
    # Digits glued to a word ("visa13", "4111abc") belong to an identifier, not a card.
    glued_before = run_start > 0 and s[run_start - 1] in _WORDISH
    glued_after = run_end < len(s) and s[run_end] in _WORDISH
    run = s[run_start:run_end]
    if run.isdigit():  # no separators, so the whole run is the only candidate
        if not (glued_before or glued_after) and _is_card(run):
            yield run_start, run_end
        return
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(s, run_start, run_end)]
    if glued_after:
        groups.pop()
    if groups and glued_before:
        groups.pop(0)
    i = 0
    while i < len(groups):
        best = None
        digits = ""
        for j in range(i, len(groups)):
            digits += s[groups[j][0]:groups[j][1]]
            if len(digits) > 19:
                break
            if _is_card(digits):
                best = j
        if best is None:
            i += 1
        else:
            yield groups[i][0], groups[best][1]
            i = best + 1


def _credential_like(token: str) -> bool:
    # Keeps prose such as "missing bearer token" while real credentials, which are
    # random, almost always have a digit, a symbol or an inner capital.
    return len(token) >= 24 or any(
        c.isdigit() or c in "._~+/=-" or (i and c.isupper()) for i, c in enumerate(token)
    )


def _find_spans(s: str) -> list[tuple[int, int, str]]:
    """Secret spans in s as (start, end, kind), sorted and non-overlapping."""
    spans: list[tuple[int, int, str]] = []
    add = spans.append
    for m in _API_KEY.finditer(s):
        if m.start() == 0 or not s[m.start() - 1].isalnum():
            add((m.start(), m.end(), "api_key"))
    if "eyJ" in s:
        for m in _JWT.finditer(s):
            add((m.start(), m.end(), "jwt"))
    if "-----BEGIN" in s:
        for m in _PEM.finditer(s):
            add((m.start(), m.end(), "secret"))
    lower = s.lower()
    if "bearer" in lower:
        for m in _BEARER.finditer(s):
            if _credential_like(m.group(1)):
                add((m.start(1), m.end(1), "bearer"))
    if "basic" in lower:
        for m in _BASIC.finditer(s):
            if _credential_like(m.group(1)):
                add((m.start(1), m.end(1), "bearer"))
    if "authorization" in lower:
        for m in _AUTH_HEADER.finditer(s):
            add((m.start(1), m.end(1), "bearer"))
    userinfo_ats: set[int] = set()
    url_passwords: set[int] = set()
    if "@" in s:
        if "://" in s:
            for m in _URL_PASSWORD.finditer(s):
                userinfo_ats.add(m.end(1))
                url_passwords.add(m.start(1))
                if m.end(1) > m.start(1):
                    add((m.start(1), m.end(1), "url_password"))
        for m in _EMAIL.finditer(s):
            # In https://user:pw@host.com, "pw@host.com" is a password and a host.
            if s.index("@", m.start()) not in userinfo_ats:
                add((m.start(), m.end(), "email"))
    for m in _DIGIT_RUN.finditer(s):
        for start, end in _card_spans(s, m.start(), m.end()):
            add((start, end, "card"))
    if any(hint in lower for hint in _KV_HINTS):
        for m in _SECRET_KV.finditer(s):
            group = m.lastindex or 0
            # "https://x-access-token:pw@host" is a URL password, and the host stays.
            if m.end(group) > m.start(group) and m.start(group) not in url_passwords:
                add((m.start(group), m.end(group), "secret"))
    if len(spans) < 2:
        return spans
    # Stable sort: at equal extent the specific kind added first names the span.
    spans.sort(key=lambda span: (span[0], -span[1]))
    merged = [spans[0]]
    for start, end, kind in spans[1:]:
        last_start, last_end, last_kind = merged[-1]
        if start < last_end:
            if end > last_end:
                merged[-1] = (last_start, end, last_kind)
        else:
            merged.append((start, end, kind))
    return merged


def pseudonym(value: str) -> str:
    """'203.0.113.77' -> 'hash:1f0c9a…' (12 hex digits of a keyed BLAKE2b)."""
    if _PSEUDONYM.match(value):
        return value
    return PSEUDONYM_PREFIX + hashlib.blake2b(value.encode(), key=_PSEUDONYM_KEY, digest_size=6).hexdigest()


def _truncation(dropped: int) -> str:
    return f"…[truncated {dropped} chars]"


class Redactor:
    """Redacts strings, key/value attributes and JSON-like structures; counts what it did."""

    def __init__(
        self,
        deny_keys: Iterable[str] = DEFAULT_DENY_KEYS,
        allow_keys: Iterable[str] = DEFAULT_ALLOW_KEYS,
        max_value_chars: int = 256,
    ) -> None:
        if max_value_chars < 0:
            raise ValueError("max_value_chars must be >= 0")
        self.deny_keys = tuple(key.lower() for key in deny_keys)
        self.allow_keys = frozenset(allow_keys)
        self._pair_keys = self.allow_keys | PSEUDONYMIZED_KEYS  # values judged by their key alone
        self.max_value_chars = max_value_chars
        self.counts: Counter[str] = Counter()

    def _denied(self, key: str) -> bool:
        lowered = key.lower()
        return any(deny in lowered for deny in self.deny_keys)

    def _cap(self, value: str) -> str:
        """value cut to max_value_chars, with a note of how much was dropped."""
        limit = self.max_value_chars
        if len(value) <= limit:
            return value
        return value[:limit] + _truncation(len(value) - limit)

    def text(self, value: str) -> str:
        """Cap to max_value_chars (append '…[truncated N chars]'), then replace
        secrets/PII with typed markers.

        The redacted body never exceeds max_value_chars even when markers are longer
        than what they replace; N counts the original characters not represented.
        """
        if not isinstance(value, str):
            value = str(value)
        limit = self.max_value_chars
        n = len(value)
        window = value if n <= limit else value[: limit + _LOOKAHEAD]
        parts: list[str] = []
        budget = limit
        pos = 0
        stopped = False
        for start, end, kind in _find_spans(window):
            take = min(min(start, limit) - pos, budget)
            if take > 0:
                parts.append(window[pos : pos + take])
                budget -= take
                pos += take
            marker = _MARKERS[kind]
            if pos < start or start >= limit or len(marker) > budget:
                stopped = True
                break
            parts.append(marker)
            self.counts[kind] += 1
            budget -= len(marker)
            # A secret that runs past the cap ends the output: what follows it lies
            # beyond the first max_value_chars characters.
            pos = end
        if not stopped and pos < min(n, limit):
            take = min(min(n, limit) - pos, budget)
            parts.append(window[pos : pos + take])
            pos += take
        if pos < n:
            parts.append(_truncation(n - pos))
        return "".join(parts)

    def pair(self, key: str, value: Any) -> str:
        """Value of attribute `key`: deny-listed key -> REDACTED; an address or user id
        -> its pseudonym; allow-listed key -> str(value) capped only, no pattern
        redaction; otherwise text(str(value))."""
        if self._denied(key):
            self.counts["key"] += 1
            return REDACTED
        if key in PSEUDONYMIZED_KEYS:
            return pseudonym(str(value))
        if key in self.allow_keys:
            return self._cap(str(value))
        return self.text(str(value))

    def data(self, obj: Any) -> Any:
        """Redacted copy of a JSON-like structure (dicts, lists, tuples, scalars).

        Values under deny-listed keys become REDACTED, strings under allow-listed keys
        are only capped, other strings and dict keys go through text(); numbers,
        bools and None are unchanged. The input is never mutated. At most MAX_NODES
        nodes are visited and anything deeper than MAX_DEPTH becomes TRUNCATED, so
        hostile or cyclic input costs bounded work.
        """
        budget = [MAX_NODES]
        return self._walk(obj, 0, budget)

    def _walk(self, obj: Any, depth: int, budget: list[int]) -> Any:
        if depth > MAX_DEPTH or budget[0] <= 0:
            return TRUNCATED
        budget[0] -= 1
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            out: dict[Any, Any] = {}
            collisions: dict[str, int] = {}
            for key, value in obj.items():
                if budget[0] <= 0:
                    out[TRUNCATED] = TRUNCATED
                    break
                if isinstance(key, str):
                    if self._denied(key):
                        budget[0] -= 1
                        self.counts["key"] += 1
                        new_value: Any = REDACTED
                    elif key in self._pair_keys and isinstance(value, str):
                        budget[0] -= 1
                        new_value = self.pair(key, value)
                    else:
                        new_value = self._walk(value, depth + 1, budget)
                    base_key = new_key = self.text(key)
                    # Two keys redacted to the same marker must not overwrite each
                    # other; the per-base count keeps many such keys linear.
                    while new_key in out:
                        collisions[base_key] = collisions.get(base_key, 1) + 1
                        new_key = f"{base_key}#{collisions[base_key]}"
                else:
                    new_key = self._walk(key, depth + 1, budget)
                    new_value = self._walk(value, depth + 1, budget)
                out[new_key] = new_value
            return out
        if isinstance(obj, (list, tuple)):
            items = []
            for item in obj:
                if budget[0] <= 0:
                    items.append(TRUNCATED)
                    break
                items.append(self._walk(item, depth + 1, budget))
            return tuple(items) if isinstance(obj, tuple) else items
        return self.text(str(obj))


def redactor_from_settings(rules) -> Redactor:
    """The configured redactor (config `analysis.redaction`): built-in key lists plus the
    configured ones. Used for everything that leaves the process: prompts, notifiers
    (Slack, PagerDuty, webhook) and OTLP incident traces, events and metrics."""
    return Redactor(deny_keys=DEFAULT_DENY_KEYS + tuple(rules.deny_keys),
                    allow_keys=DEFAULT_ALLOW_KEYS + tuple(rules.allow_keys), max_value_chars=rules.max_value_chars)


# Written by otel-ai itself, never telemetry: kept as they are (a deny-listed key such as
# "input_tokens" would otherwise blank the token counts).
_HEX_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_OWN_ANALYSIS_FIELDS = ("usage", "cost_usd", "latency_ms", "attempts", "model", "source", "prompt_version",
                        "analyzed_at", "incident_version", "repaired")


def redact_incident(redactor: Redactor, incident):
    """A copy of an incident fit to leave the process: every string that came from
    telemetry (route, service, summary, suspects, exceptions, versions, the root cause and its
    chain, the analysis that quotes them) capped and redacted; suspect values under their attribute's key rule."""
    from otel_ai.model import Subject

    copy = incident.copy()
    s = incident.subject
    copy.subject = Subject(s.kind, redactor.text(s.service), redactor.text(s.method), redactor.text(s.route))
    copy.summary = redactor.text(incident.summary)
    copy.data = redactor.data(incident.data)
    copy.context = redactor.data(incident.context)
    for ids in ("exemplar_trace_ids", "exemplar_span_ids"):  # hex ids decode formatted: keep them linkable
        if ids in incident.context:
            copy.context[ids] = [i if isinstance(i, str) and _HEX_ID.fullmatch(i) else "" for i in incident.context[ids]]
    copy.suspects = [
        {**redactor.data(suspect), "value": redactor.pair(str(suspect.get("key", "")), suspect.get("value", ""))}
        if isinstance(suspect, dict) else redactor.data(suspect)
        for suspect in incident.suspects
    ]
    if incident.root_cause is not None:  # names of services, pods, routes: telemetry too
        copy.root_cause = redactor.data(incident.root_cause)
    if isinstance(incident.analysis, dict):
        copy.analysis = {**redactor.data(incident.analysis),
                         **{k: incident.analysis[k] for k in _OWN_ANALYSIS_FIELDS if k in incident.analysis}}
    if incident.acknowledged_by:
        copy.acknowledged_by = redactor.text(incident.acknowledged_by)
    return copy
