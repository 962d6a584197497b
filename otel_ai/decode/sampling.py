"""A span's adjusted count (SpanBatch.weight) from OpenTelemetry probability sampling.

The W3C tracestate's `ot` member carries the rejection threshold `th` (1 to 14 lowercase
hex digits, the 56-bit threshold with trailing zeros dropped). A span sampled with
threshold T stands for 2^56 / (2^56 - T) spans. Anything malformed counts as 1.0.
The native reader implements the same rule (`_otlp.c`, `tracestate_weight`); attribute
based sampling (`sampling.priority`, `SampleRate`) is a hook for later.
"""
from __future__ import annotations

_HEX = frozenset("0123456789abcdef")
_MAX_TH_DIGITS = 14
_SPACE = " \t"


def tracestate_weight(tracestate: str) -> float:
    if "ot=" not in tracestate:
        return 1.0
    for member in tracestate.split(","):
        key, sep, value = member.strip(_SPACE).partition("=")
        if key != "ot" or not sep:
            continue
        for field in value.split(";"):
            name, sep, digits = field.partition(":")
            if name == "th" and sep:
                return _threshold_weight(digits)
        return 1.0
    return 1.0


def _threshold_weight(digits: str) -> float:
    if not 1 <= len(digits) <= _MAX_TH_DIGITS or not set(digits) <= _HEX:
        return 1.0
    threshold = int(digits.ljust(_MAX_TH_DIGITS, "0"), 16)
    return float(2**56) / float(2**56 - threshold)
