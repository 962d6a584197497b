"""Sampled traces, read correctly: each span's adjusted count, and a check for tail
sampling that would inflate error rates.

Adjusted count (OpenTelemetry probability sampling, W3C tracestate `ot=th:<hex>`):
a span was kept when its 56-bit randomness was at least the rejection threshold T,
so it stands for 2^56 / (2^56 - T) spans. `th` holds 1 to 14 lowercase hex digits,
the most significant first, with trailing zeros dropped (`th:8` is T = 2^55: 50 %).
Older conventions: `SampleRate` (Honeycomb, 1 in N) and `sampling.priority` > 0
(OpenTracing: kept on purpose, not by chance, so it stands for itself).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_MAX_THRESHOLD = 1 << 56
_TH = re.compile(r"[0-9a-f]{1,14}")


def threshold_adjusted_count(th: str) -> float | None:
    """Adjusted count of an `ot=th:` value; None when it is not a valid threshold."""
    if not _TH.fullmatch(th):
        return None
    threshold = int(th.ljust(14, "0"), 16)
    return _MAX_THRESHOLD / (_MAX_THRESHOLD - threshold)


@lru_cache(maxsize=1024)
def tracestate_adjusted_count(trace_state: str) -> float | None:
    """Adjusted count from a W3C tracestate's `ot` member; None without a valid `th`.

    Cached: a deployment sends few distinct tracestates (one per sampling rate)."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key != "ot":
            continue
        for field in value.split(";"):
            name, _, th = field.partition(":")
            if name == "th":
                return threshold_adjusted_count(th)
        return None
    return None


# Span attributes that say how a span was sampled; a tail sampler that sets one only on
# the spans it kept for their errors gives itself away (likely_tail_sampling).
SAMPLING_PRIORITY = "sampling.priority"  # OpenTracing
SAMPLE_RATE = "SampleRate"  # Honeycomb
TAIL_SAMPLING_POLICY = "tailsampling.policy"  # the Collector's tail_sampling processor (recordpolicy gate)
SAMPLING_ATTRIBUTES = (SAMPLING_PRIORITY, SAMPLE_RATE, TAIL_SAMPLING_POLICY)


def adjusted_count(trace_state: str = "", sample_rate: float | None = None,
                   sampling_priority: int | None = None) -> float:
    """How many spans this one stands for: the tracestate's threshold if valid, else
    1 for `sampling.priority` > 0, else `SampleRate` when it is in [1, 2^56], else 1."""
    if trace_state:
        found = tracestate_adjusted_count(trace_state)
        if found is not None:
            return found
    if sampling_priority is not None and sampling_priority > 0:
        return 1.0
    if sample_rate is not None and 1 <= sample_rate <= _MAX_THRESHOLD:  # beyond th's own range: not a rate
        return float(sample_rate)
    return 1.0


@dataclass(slots=True)
class TailSamplingEvidence:
    """Per route, over the same window: what spans say and what metrics say.

    `span_*` are sums of adjusted counts (weights); `spans` is the plain number of
    spans, which decides how much the span side can be trusted. `marked_*` count spans
    carrying a sampling attribute (`sampling.priority`, `SampleRate`, a sampler's
    policy attribute) among failing and among other spans."""

    spans: np.ndarray
    span_requests: np.ndarray
    span_errors: np.ndarray
    metric_requests: np.ndarray
    metric_errors: np.ndarray
    error_spans: np.ndarray
    marked_error_spans: np.ndarray
    ok_spans: np.ndarray
    marked_ok_spans: np.ndarray


@dataclass(slots=True)
class TailSamplingVerdict:
    by_error_share: np.ndarray  # bool per route: spans fail far more often than metrics say
    by_attribute: np.ndarray  # bool per route: only failing spans carry a sampling attribute
    span_error_share: np.ndarray
    metric_error_share: np.ndarray

    @property
    def suspected(self) -> np.ndarray:
        return self.by_error_share | self.by_attribute


def likely_tail_sampling(evidence: TailSamplingEvidence, min_spans: int = 20, min_metric_requests: int = 100,
                         min_ratio: float = 2.0, min_gap: float = 0.05, min_z: float = 4.0,
                         min_marked_errors: int = 5) -> TailSamplingVerdict:
    """Routes whose traces look tail-sampled (errors kept, the rest thinned).

    By error share: the weighted span error share is at least `min_ratio` times the
    metric error share and `min_gap` above it, with a one-sided z score of at least
    `min_z` treating the spans as a sample of the metric's traffic. Weights that a
    tail sampler did record (th in tracestate) bring the shares back together, so
    correctly weighted tail sampling is not flagged.

    By attribute: at least 90 % of the failing spans carry a sampling attribute and at
    most 10 % of the others do.
    """
    e = evidence
    with np.errstate(divide="ignore", invalid="ignore"):
        span_share = np.where(e.span_requests > 0, e.span_errors / e.span_requests, 0.0)
        metric_share = np.where(e.metric_requests > 0, e.metric_errors / e.metric_requests, 0.0)
        # A metric share of 0 still has an uncertainty of about one request in N.
        p = np.clip(np.maximum(metric_share, 1.0 / np.maximum(e.metric_requests, 1)), 0.0, 1.0)
        z = (span_share - metric_share) / np.sqrt(p * (1 - p) / np.maximum(e.spans, 1))
        by_share = ((e.spans >= min_spans) & (e.metric_requests >= min_metric_requests)
                    & (span_share >= min_ratio * metric_share) & (span_share - metric_share >= min_gap)
                    & (z >= min_z))
        marked_errors = np.where(e.error_spans > 0, e.marked_error_spans / e.error_spans, 0.0)
        marked_ok = np.where(e.ok_spans > 0, e.marked_ok_spans / e.ok_spans, 0.0)
    by_attribute = (e.marked_error_spans >= min_marked_errors) & (marked_errors >= 0.9) & (marked_ok <= 0.1)
    return TailSamplingVerdict(by_share, by_attribute, span_share, metric_share)
