"""Event-time helpers: everything inside otel-ai is integer nanoseconds since the epoch."""
from __future__ import annotations

import datetime as _dt
import re

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float) -> float:
    """'5m' -> 300.0 seconds; bare numbers are seconds. Raises ValueError on junk."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("duration must not be negative")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def format_duration(seconds: float) -> str:
    """300 -> '5m', 10 -> '10s'; the inverse of parse_duration for round values."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def rfc3339(ns: int | None) -> str | None:
    if ns is None:
        return None
    dt = _dt.datetime.fromtimestamp(ns / NS_PER_S, tz=_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{dt.microsecond // 1000:03d}Z" if dt.microsecond else "Z")


def parse_rfc3339(text: str | None) -> int | None:
    if text is None:
        return None
    dt = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp() * NS_PER_S)
