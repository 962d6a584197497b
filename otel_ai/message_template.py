"""Exception messages as templates, so that one error counts once.

`item 2745: db connection reset` and `item 3695: db connection reset` are the same
error; counted apart, the top error reads "(2x)" when it happened 67 times. Variable
parts become placeholders, most specific first: UUIDs, quoted values, hex, IP
addresses, mixed letter-and-digit ids, then numbers (a unit after a number stays).
Digits inside a word (`sha256`, `http2`, `v2`, `5xx`) are part of the word and stay.
"""
from __future__ import annotations

import re

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"'[^'\n]{0,200}'"), "'<str>'"),
    (re.compile(r'"[^"\n]{0,200}"'), '"<str>"'),
    (re.compile(r"`[^`\n]{0,200}`"), "`<str>`"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    # Trace and span ids, hashes: long runs of hex digits with at least one digit.
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"), "<ip>"),
    # Generated ids such as x7Gk2Pq9 or 3f9c2a1bQ: letters and digits, 8 or more.
    (re.compile(r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{8,}\b"), "<id>"),
    # A number alone, or followed by a unit (1500ms, 12.5s, 64KB); 5xx and 2nd stay.
    (re.compile(r"(?<![A-Za-z0-9])[-+]?\d+(?:[.,]\d+)*(?=(?:ns|us|µs|ms|s|m|h|d|b|kb|mb|gb|kib|mib|gib)?"
                r"(?![A-Za-z0-9]))", re.IGNORECASE), "<num>"),
)
_SPACES = re.compile(r"\s+")


def template(message: str) -> str:
    """The message with its variable parts replaced by placeholders."""
    for pattern, placeholder in _RULES:
        message = pattern.sub(placeholder, message)
    return _SPACES.sub(" ", message).strip()
