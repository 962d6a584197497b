"""Offline analysis: a deterministic diagnosis built from an incident's own evidence.

Every incident gets an answer in the same schema as Claude's (AnalysisAnswer), even with
no ANTHROPIC_API_KEY, with the daily AI budget spent or with the API down. The analyzer
weighs the evidence the pipeline already collected (suspects: what bad requests share
that healthy ones don't; the values counted among bad requests; versions first seen
before onset; top errors; the metric and its type-specific numbers; related open
incidents) against the cause families of the incident's type. Each family becomes a
hypothesis with a verdict and the numbers it rests on, so a reader can check every claim,
and the same incident always yields the same answer: no clock, no randomness, stable order.

Telemetry values (attribute values, error messages, routes) are untrusted: they are
clipped to MAX_VALUE_CHARS and stripped of control characters before they are quoted.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otel_ai.analysis.schema import AnalysisAnswer, Hypothesis, RootCause
from otel_ai.model import DEPENDENCY, Incident
from otel_ai.suspects import KEY_PRIORITY

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INSUFFICIENT = "insufficient_evidence"

# When a suspect counts as evidence. Shares are 0-1; score = bad_share - good_share.
DISTINGUISHING_SCORE = 0.3  # below this a pair does not tell failing from healthy requests
SUPPORT_MIN_BAD_SHARE = 0.5  # a cause must be on at least half of the failing requests...
SUPPORT_MAX_GOOD_SHARE = 0.25  # ...and on few healthy ones
CONTRADICTION_MAX_SCORE = 0.15  # good_share this close to bad_share: the pair is merely common
MIN_BAD_SAMPLE = 3  # shares computed from fewer failing requests than this prove nothing

# From a suspect's score to a cause's probability (percent).
BASE_PROBABILITY = 40
PROBABILITY_PER_SCORE = 55
MAX_CAUSE_PROBABILITY = 95
NEW_VERSION_BONUS = 0.1  # a version first seen just before onset is a likelier culprit
RELATED_INCIDENT_BONUS = 0.1  # the suspected dependency also has its own open incident
RELATED_ONLY_SCORE = 0.3  # a dependency known only from its own open incident
DEPENDENCY_ITSELF_SCORE = 0.5  # a dependency failing for all its callers alike
GENERIC_CAUSE_PROBABILITY = 15
ROLLBACK_MIN_PROBABILITY = 50
MAX_OFFLINE_CONFIDENCE = 90  # offline rules never claim the certainty a full analysis might

MAX_VALUE_CHARS = 120
MAX_EXEMPLARS = 3
MAX_FACTS_PER_FAMILY = 3

VERSION_KEYS = ("service.version",)
DEPENDENCY_KEYS = ("dependency.failed", "dependency.slow")
INSTANCE_KEYS = ("k8s.pod.name", "service.instance.id", "k8s.node.name", "host.name")
TENANT_KEYS = ("tenant.id",)
LOCATION_KEYS = ("cloud.availability_zone", "cloud.region")
CLIENT_KEYS = ("tenant.id", "client.address", "source.address", "enduser.id", "user.id", "user_agent.original")
CALLER_KEYS = ("service.name",)
# Credential stuffing: at least this many distinct accounts, most refused requests for a new one.
STUFFING_MIN_ACCOUNTS = 10
STUFFING_MIN_ACCOUNT_SHARE = 0.5
SPREAD_MAX_TOP_SHARE = 0.5  # no single value on more than this share of bad requests: spread out
ONE_SOURCE_SHARE = 0.9  # one value on at least this share of bad requests: a single source
SPREAD_SCORE = 0.4
ONE_SOURCE_SCORE = 0.5
RECOVERED_SCORE = 0.5
DEPENDENCY_INCIDENT_TYPES = ("CIRCUIT_BREAKER_CANDIDATE", "UPSTREAM_DEGRADATION")

INSTANCE_NOUNS = {"k8s.pod.name": "Pod", "service.instance.id": "Instance", "k8s.node.name": "Node",
                  "host.name": "Host"}
INSTANCE_ACTIONS = {
    "k8s.pod.name": "Cordon/restart pod {value}: delete it so its ReplicaSet replaces it, after saving its logs",
    "service.instance.id": "Take instance {value} out of the load balancer and restart it, after saving its logs",
    "k8s.node.name": "Cordon and drain node {value}, then check its health (disk, memory, network)",
    "host.name": "Take host {value} out of rotation and check its health (disk, memory, network)",
}
LOCATION_NOUNS = {"cloud.availability_zone": "Zone", "cloud.region": "Region"}

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_KEY_RANK = {key: i for i, key in enumerate(KEY_PRIORITY)}


# --------------------------------------------------------------------------- evidence

@dataclass(frozen=True, slots=True)
class Suspect:
    key: str
    value: str
    score: float
    bad_share: float
    good_share: float

    @property
    def pair(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True, slots=True)
class RelatedDependency:
    service: str
    type: str
    summary: str
    slow: bool

    def fact(self) -> str:
        return f"open {self.type} incident on dependency {self.service}: {self.summary}".rstrip(": ")


@dataclass(frozen=True, slots=True)
class BadValues:
    """How one key's values spread over the captured bad requests (context.bad_request_values)."""

    key: str
    bad_requests: int
    distinct: int
    top: tuple[tuple[str, float], ...]  # (value, share of bad requests), most common first

    def line(self, noun: str) -> str:
        text = f"{self.distinct} distinct {self.key} among {self.bad_requests} captured {noun}"
        if self.top:
            value, share = self.top[0]
            text += f"; the most common, {self.key}={value}, is on {_share(share)} of them"
        return text


BAD_NOUNS = {
    "http_429_rate": "requests refused with 429", "auth_failure_rate": "requests refused with 401/403",
    "calls_per_request": "retried calls", "utilization_estimate": "slow requests",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """The incident's evidence, parsed, sanitised and in a stable order."""

    service: str  # the route's service, or the dependency's name
    owner: str  # whose versions and pods the suspects describe: the service, or a dependency's caller
    label: str
    on_dependency: bool
    latency: bool
    suspects: tuple[Suspect, ...]
    new_versions: tuple[tuple[str, float], ...]  # (version, seconds before onset), oldest first
    top_errors: tuple[tuple[str, str, int], ...]  # (type, message, count)
    exemplars: tuple[str, ...]
    bad_sample: int | None
    related_dependencies: tuple[RelatedDependency, ...]
    metric_fact: str
    user_impact: str
    metric: str = ""
    bad_values: tuple[BadValues, ...] = ()  # values counted among the bad requests, per key
    details: tuple[tuple[str, float], ...] = ()  # the type's own numbers (data fields), sorted

    @property
    def bad_noun(self) -> str:
        noun = BAD_NOUNS.get(self.metric)
        if noun:
            return noun
        return f"{'slow' if self.latency else 'failing'} {'calls' if self.on_dependency else 'requests'}"

    def detail(self, key: str) -> float | None:
        return next((v for k, v in self.details if k == key), None)

    def counted(self, key: str) -> BadValues | None:
        return next((b for b in self.bad_values if b.key == key), None)

    @property
    def problem(self) -> str:
        return "slowdown" if self.latency else "failures"

    def seconds_before_onset(self, version: str) -> float | None:
        return next((s for v, s in self.new_versions if v == version), None)


def _clip(value: Any) -> str:
    """Untrusted telemetry text, safe to quote: one line, at most MAX_VALUE_CHARS."""
    text = _CONTROL_CHARS.sub(" ", str(value))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _half_up(value: float) -> int:
    """Rounds 36.5 s to 37 s, as a reader would (round() would give 36)."""
    return math.floor(value + 0.5)


def _share(value: float) -> str:
    return f"{_half_up(value * 100)}%"


def _percent(value: float) -> str:
    return f"{value:.1f}%" if abs(value) < 10 else f"{value:.0f}%"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{_half_up(seconds)} s" if seconds < 90 else f"{_half_up(seconds / 60)} min"


def _parse_suspects(raw: Any) -> tuple[Suspect, ...]:
    found = set()
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or "key" not in item:
            continue
        bad, good = _number(item.get("bad_share")) or 0.0, _number(item.get("good_share")) or 0.0
        score = _number(item.get("score"))
        found.add(Suspect(_clip(item["key"]), _clip(item.get("value", "")),
                          round(bad - good if score is None else score, 3), bad, good))
    # The suspects stage's own order: score, then the more specific key, then the pair.
    return tuple(sorted(found, key=lambda s: (-s.score, _KEY_RANK.get(s.key, len(_KEY_RANK)), s.key, s.value)))


def _parse_new_versions(raw: Any) -> tuple[tuple[str, float], ...]:
    versions = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and "version" in item:
            seconds = _number(item.get("seconds_before_onset"))
            versions.append((_clip(item["version"]), 0.0 if seconds is None else seconds))
    return tuple(sorted(set(versions), key=lambda v: (-v[1], v[0])))


def _parse_top_errors(raw: Any) -> tuple[tuple[str, str, int], ...]:
    errors = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            count = _number(item.get("count")) or 0
            errors.append((_clip(item.get("type", "")), _clip(item.get("message", "")), int(count)))
    return tuple(errors)


def _parse_bad_values(raw: Any) -> tuple[BadValues, ...]:
    found = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or "key" not in item:
            continue
        top = tuple((_clip(t.get("value", "")), _number(t.get("share")) or 0.0)
                    for t in item.get("top", []) if isinstance(t, dict))
        found.append(BadValues(_clip(item["key"]), int(_number(item.get("bad_requests")) or 0),
                               int(_number(item.get("distinct")) or 0), top))
    return tuple(found)


def _parse_details(data: dict) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((str(k), float(v)) for k, v in data.items() if _number(v) is not None))


def _parse_related(incident: Incident, related: list[dict]) -> tuple[RelatedDependency, ...]:
    own = (incident.type, incident.subject.service, incident.subject.route, str(incident.subject.kind))
    found = set()
    for item in related:
        if not isinstance(item, dict):
            continue
        kind, type_ = str(item.get("subject_kind", "")), str(item.get("type", ""))
        if kind != DEPENDENCY and type_ not in DEPENDENCY_INCIDENT_TYPES:
            continue
        if (type_, item.get("service"), item.get("route"), kind) == own or not item.get("service"):
            continue
        data = item.get("data") if isinstance(item.get("data"), dict) else {}
        found.add(RelatedDependency(_clip(item["service"]), _clip(type_), _clip(item.get("summary", "")),
                                    data.get("metric") == "latency_p95"))
    return tuple(sorted(found, key=lambda r: (r.service, r.type, r.summary)))


def _subject_label(incident: Incident) -> str:
    s = incident.subject
    if str(s.kind) == DEPENDENCY:
        return f"dependency {_clip(s.service)}"
    label = " ".join(part for part in (_clip(s.method), _clip(s.route)) if part)
    return label or _clip(s.service) or "the system"


def _window_counts(context: dict) -> str:
    bad, total = _number(context.get("bad_count")), _number(context.get("sample_count"))
    if bad is None or not total:
        return ""
    return f" ({int(bad)} of {int(total)} in the last window)"


def _describe_metric(incident: Incident) -> tuple[str, str]:
    """(a fact quoting the metric, the user impact in words)."""
    data, context = incident.data or {}, incident.context or {}
    metric, unit = str(data.get("metric", "")), str(data.get("unit", ""))
    value, threshold = _number(data.get("current_value")), _number(data.get("threshold"))
    baseline = _number(data.get("baseline_value"))
    on_dependency = str(incident.subject.kind) == DEPENDENCY
    label, service = _subject_label(incident), _clip(incident.subject.service)
    if value is None:
        return "the incident carries no metric value", "Impact unknown: the incident carries no metric value"
    trend = f", {_clip(data['trend'])}" if data.get("trend") else ""
    if metric == "error_rate":
        fact = f"error rate {_percent(value)}"
        fact += f" vs threshold {_percent(threshold)}" if threshold is not None else ""
        fact += f", baseline {_percent(baseline)}" if baseline is not None else ""
        counts = _window_counts(context)
        if on_dependency:
            return fact + trend, f"Calls to {service} fail at {_percent(value)}{counts}"
        return fact + trend, f"About {_percent(value)} of {label} requests fail{counts}"
    describe = METRIC_WORDS.get(metric)
    if describe is not None:
        return describe(data, value, threshold, baseline, label, service, trend, _window_counts(context))
    if metric.startswith("latency") or unit == "ms":
        numbers = f"{value:.0f} ms" + (f" vs {threshold:.0f} ms threshold" if threshold is not None else "")
        numbers += f", baseline {baseline:.0f} ms" if baseline is not None else ""
        where = f"calls to {service}" if on_dependency else label
        return f"p95 {numbers}{trend}", f"p95 latency of {where} is {numbers}"
    fact = f"{_clip(metric) or 'metric'} {value:g}{_clip(unit)}"
    fact += f" vs threshold {threshold:g}{_clip(unit)}" if threshold is not None else ""
    return fact + trend, f"{label}: {fact}"


def _share_of_requests(what: str):
    """Words for a share-of-requests metric: 429s, 401/403s."""
    def describe(data, value, threshold, baseline, label, service, trend, counts) -> tuple[str, str]:
        fact = f"{what} share {_percent(value)}"
        fact += f" vs threshold {_percent(threshold)}" if threshold is not None else ""
        fact += f", baseline {_percent(baseline)}" if baseline is not None else ""
        return fact + trend, f"{_percent(value)} of {label} requests are refused with {what}{counts}"
    return describe


def _calls_per_request(data, value, threshold, baseline, label, service, trend, counts) -> tuple[str, str]:
    amplification = _number(data.get("amplification"))
    usual = f"usual {baseline:.2f}" if baseline is not None else "usually 1"
    times = f", {amplification:.1f}x amplification" if amplification is not None else ""
    fact = f"{value:.1f} calls per request to {service} ({usual}{times})"
    return fact + trend, f"Retries multiply the calls to {service}: {value:.1f} per request ({usual})"


def _utilization(data, value, threshold, baseline, label, service, trend, counts) -> tuple[str, str]:
    mean, usual = _number(data.get("latency_mean_ms")), _number(data.get("baseline_latency_mean_ms"))
    rate, usual_rate = _number(data.get("request_rate_per_s")), _number(data.get("baseline_request_rate_per_s"))
    fact = f"about {value:.0f}% utilized"
    if None not in (mean, usual, rate, usual_rate) and usual_rate:
        fact += (f": mean latency {mean:.0f} ms vs {usual:.0f} ms usual at {rate / usual_rate:.1f}x the usual "
                 f"load ({rate:.1f} vs {usual_rate:.1f} requests/s)")
    eta = _number(data.get("time_to_saturation_s"))
    until = "" if eta is None else f"; saturation in about {_ago(eta)} at this trend"
    return fact + until + trend, f"Requests to {label} slow down under load, errors not yet up ({fact}){until}"


METRIC_WORDS = {
    "http_429_rate": _share_of_requests("429"),
    "auth_failure_rate": _share_of_requests("401/403"),
    "calls_per_request": _calls_per_request,
    "utilization_estimate": _utilization,
}


def _caller(suspects: tuple[Suspect, ...], bad_values: tuple[BadValues, ...]) -> str:
    """A dependency's captures are its callers' CLIENT spans, which carry the caller's service.name:
    a service.name suspect, else the one service that sent (nearly) all bad calls."""
    found = next((s.value for s in suspects if s.key == "service.name"), None)
    if found is None:
        found = next((b.top[0][0] for b in bad_values if b.key == "service.name" and b.top
                      and b.top[0][1] >= ONE_SOURCE_SHARE), None)
    return found or "the calling service"


def _gather_evidence(incident: Incident, related: list[dict]) -> Evidence:
    data, context = incident.data or {}, incident.context or {}
    sample = context.get("suspect_sample") if isinstance(context.get("suspect_sample"), dict) else {}
    bad_sample = _number(sample.get("bad"))
    metric_fact, user_impact = _describe_metric(incident)
    exemplars = context.get("exemplar_trace_ids") if isinstance(context.get("exemplar_trace_ids"), list) else []
    suspects = _parse_suspects(incident.suspects)
    bad_values = _parse_bad_values(context.get("bad_request_values"))
    on_dependency = str(incident.subject.kind) == DEPENDENCY
    return Evidence(
        service=_clip(incident.subject.service),
        owner=_caller(suspects, bad_values) if on_dependency else _clip(incident.subject.service),
        label=_subject_label(incident),
        on_dependency=on_dependency,
        latency=str(data.get("metric", "")).startswith("latency") or data.get("unit") == "ms",
        suspects=suspects,
        new_versions=_parse_new_versions(context.get("new_versions")),
        top_errors=_parse_top_errors(context.get("top_errors")),
        exemplars=tuple(_clip(t) for t in exemplars[:MAX_EXEMPLARS]),
        bad_sample=None if bad_sample is None else int(bad_sample),
        related_dependencies=_parse_related(incident, related),
        metric_fact=metric_fact,
        user_impact=user_impact,
        metric=str(data.get("metric", "")),
        bad_values=bad_values,
        details=_parse_details(data),
    )


# --------------------------------------------------------------------------- facts

def _share_line(ev: Evidence, s: Suspect) -> str:
    if s.key == "dependency.failed":
        carries = f"include failed calls to {s.value}"
    elif s.key == "dependency.slow":
        carries = f"spend most of their time in calls to {s.value}"
    else:
        carries = f"carry {s.pair}"
    return f"{_share(s.bad_share)} of {ev.bad_noun} {carries} vs {_share(s.good_share)} of healthy ones"


def _error_line(error: tuple[str, str, int]) -> str:
    type_, message, count = error
    text = f"{type_}: {message}" if type_ and message else type_ or message
    return f"top error {text} ({count}x)"


def _errors_mentioning(ev: Evidence, name: str) -> tuple[str, ...]:
    """The top error about `name` if one is, else the top error."""
    matching = [e for e in ev.top_errors if name and name.lower() in f"{e[0]} {e[1]}".lower()]
    chosen = matching[:1] or list(ev.top_errors[:1])
    return tuple(_error_line(e) for e in chosen)


def _exemplar_line(ev: Evidence) -> tuple[str, ...]:
    return (f"exemplar traces: {', '.join(ev.exemplars)}",) if ev.exemplars else ()


def _common_evidence(ev: Evidence, about: str = "") -> tuple[str, ...]:
    return _errors_mentioning(ev, about) + _exemplar_line(ev)


def _nothing_distinguishes(ev: Evidence) -> str:
    if not ev.suspects:
        return f"no attribute value is over-represented among {ev.bad_noun}"
    best = ev.suspects[0]
    return (f"no attribute separates {ev.bad_noun} from healthy ones (the best suspect, {best.pair}, "
            f"scores {best.score:.2f}: {_share(best.bad_share)} vs {_share(best.good_share)})")


# --------------------------------------------------------------------------- verdicts

@dataclass(frozen=True, slots=True)
class Cause:
    text: str
    score: float  # 0-1, drives the probability
    evidence: tuple[str, ...]
    actions: tuple[str, ...]
    headline: str  # the summary's sentence when this cause ranks first
    new_deploy: bool = False
    rollback_note: str = ""  # why (not) roll back, when this cause ranks first


@dataclass(frozen=True, slots=True)
class Finding:
    hypothesis: str
    verdict: str
    facts: tuple[str, ...]
    cause: Cause | None = None


def _verdict(ev: Evidence, s: Suspect) -> str:
    if s.score < CONTRADICTION_MAX_SCORE:
        return CONTRADICTED
    distinguishes = (s.bad_share >= SUPPORT_MIN_BAD_SHARE and s.good_share <= SUPPORT_MAX_GOOD_SHARE
                     and s.score >= DISTINGUISHING_SCORE)
    if not distinguishes or (ev.bad_sample is not None and ev.bad_sample < MIN_BAD_SAMPLE):
        return INSUFFICIENT
    return SUPPORTED


def _caveat(ev: Evidence, s: Suspect, verdict: str) -> tuple[str, ...]:
    if verdict == CONTRADICTED:
        common = (f"{s.pair} is about as common among healthy requests ({_share(s.good_share)}) "
                  f"as among {ev.bad_noun} ({_share(s.bad_share)})")
        return (common,)
    if ev.bad_sample is not None and ev.bad_sample < MIN_BAD_SAMPLE:
        return (f"only {ev.bad_sample} {ev.bad_noun} were captured, too few to trust the shares",)
    return (f"{s.pair} is on too few {ev.bad_noun} or too many healthy ones to single it out",)


def _members(ev: Evidence, keys: tuple[str, ...]) -> list[Suspect]:
    return [s for s in ev.suspects if s.key in keys]


def _family_facts(ev: Evidence, members: list[Suspect]) -> tuple[str, ...]:
    return tuple(_share_line(ev, s) for s in members[:MAX_FACTS_PER_FAMILY])


def _supported_suspect(ev: Evidence, keys: tuple[str, ...]) -> Suspect | None:
    return next((s for s in _members(ev, keys) if _verdict(ev, s) == SUPPORTED), None)


def _unsupported(hypothesis: str, ev: Evidence, members: list[Suspect], none_fact: str) -> Finding:
    if not members:
        return Finding(hypothesis, INSUFFICIENT, (none_fact,))
    best = members[0]
    verdict = _verdict(ev, best)
    return Finding(hypothesis, verdict, _family_facts(ev, members) + _caveat(ev, best, verdict))


# --------------------------------------------------------------------------- cause families

def _new_deploy(ev: Evidence) -> Finding:
    hypothesis = f"A new version of {ev.owner} (bad deploy) causes the {ev.problem}"
    members = _members(ev, VERSION_KEYS)
    best = members[0] if members else None
    if best is None or _verdict(ev, best) != SUPPORTED:
        if best is None and ev.new_versions:
            facts = tuple(f"service.version={v} first seen {_ago(s)} before onset, but it does not separate "
                          f"{ev.bad_noun} from healthy ones" for v, s in ev.new_versions[:MAX_FACTS_PER_FAMILY])
            return Finding(hypothesis, INSUFFICIENT, facts)
        return _unsupported(hypothesis, ev, members, "No version change correlates with the failures")
    facts = _family_facts(ev, members)
    seconds = ev.seconds_before_onset(best.value)
    if seconds is None:
        return Finding(hypothesis, SUPPORTED, facts, _old_version_cause(ev, best))
    first_seen = f"service.version={best.value} first seen {_ago(seconds)} before onset"
    return Finding(hypothesis, SUPPORTED, facts + (first_seen,), _bad_deploy_cause(ev, best, first_seen, seconds))


def _bad_deploy_cause(ev: Evidence, s: Suspect, first_seen: str, seconds: float) -> Cause:
    return Cause(
        text=f"Bad deploy: {ev.owner} service.version={s.value}, first seen {_ago(seconds)} before onset",
        score=min(1.0, s.score + NEW_VERSION_BONUS),
        evidence=(_share_line(ev, s), first_seen) + _common_evidence(ev),
        actions=(f"Roll back {ev.owner} to the version before {s.value}",
                 f"Halt any rollout of {ev.owner} {s.value} still in progress"),
        headline=(f"{_share(s.bad_share)} of {ev.bad_noun} carry service.version={s.value}, which is on "
                  f"{_share(s.good_share)} of healthy traffic, first seen {_ago(seconds)} before onset: roll back."),
        new_deploy=True,
        rollback_note=(f"service.version={s.value} was first seen {_ago(seconds)} before onset and is on "
                       f"{_share(s.bad_share)} of {ev.bad_noun} vs {_share(s.good_share)} of healthy ones"),
    )


def _old_version_cause(ev: Evidence, s: Suspect) -> Cause:
    return Cause(
        text=f"{ev.owner} instances running service.version={s.value} (not a fresh deploy)",
        score=s.score,
        evidence=(_share_line(ev, s), f"service.version={s.value} was not first seen shortly before onset")
        + _common_evidence(ev),
        actions=(f"Drain or replace {ev.owner} instances running service.version={s.value}",
                 f"Compare service.version={s.value} with the version on the instances that stay healthy"),
        headline=(f"{_share(s.bad_share)} of {ev.bad_noun} carry service.version={s.value} vs "
                  f"{_share(s.good_share)} of healthy ones; it is not a fresh deploy: drain its instances."),
        rollback_note=(f"service.version={s.value} correlates with the {ev.problem} but was not first seen shortly "
                       "before onset, so there is no fresh deploy to roll back"),
    )


def _failing_dependency(ev: Evidence) -> Finding:
    hypothesis = f"A failing or slow dependency causes the {ev.problem}"
    if ev.on_dependency:
        return _dependency_itself(ev, hypothesis)
    members = _members(ev, DEPENDENCY_KEYS)
    best = _supported_suspect(ev, DEPENDENCY_KEYS)
    if best is not None:
        related = tuple(r.fact() for r in ev.related_dependencies if r.service == best.value)
        bonus = RELATED_INCIDENT_BONUS if related else 0.0
        cause = _dependency_cause(ev, best.value, best.key == "dependency.slow", min(1.0, best.score + bonus),
                                  (_share_line(ev, best),) + related, _share_line(ev, best))
        return Finding(hypothesis, SUPPORTED, _family_facts(ev, members) + related, cause)
    ruled_out = {s.value for s in members if _verdict(ev, s) == CONTRADICTED}
    usable = [r for r in ev.related_dependencies if r.service not in ruled_out]
    if usable:
        first = usable[0]
        facts = _family_facts(ev, members) + tuple(r.fact() for r in usable[:MAX_FACTS_PER_FAMILY])
        headline = f"{first.service} has its own open {first.type} incident"
        cause = _dependency_cause(ev, first.service, first.slow, RELATED_ONLY_SCORE, (first.fact(),), headline)
        return Finding(hypothesis, SUPPORTED, facts, cause)
    return _unsupported(hypothesis, ev, members,
                        f"no failed or slow dependency call is over-represented among {ev.bad_noun}, "
                        "and no dependency has an open incident")


def _dependency_itself(ev: Evidence, hypothesis: str) -> Finding:
    """A dependency incident: the dependency is the culprit unless one caller-side slice explains it."""
    caller_side = next((s for s in ev.suspects if s.key not in DEPENDENCY_KEYS and _verdict(ev, s) == SUPPORTED),
                       None)
    if caller_side is not None:
        return Finding(hypothesis, INSUFFICIENT, (
            ev.metric_fact,
            f"the {ev.problem} concentrate on the caller side: {_share_line(ev, caller_side)}",
        ))
    related = tuple(r.fact() for r in ev.related_dependencies if r.service == ev.service)
    spread = f"{ev.bad_noun} are spread across callers alike: {_nothing_distinguishes(ev)}"
    score = DEPENDENCY_ITSELF_SCORE + (RELATED_INCIDENT_BONUS if related else 0.0)
    cause = _dependency_cause(ev, ev.service, ev.latency, score, (ev.metric_fact, spread) + related,
                              f"{ev.user_impact} for all callers alike")
    return Finding(hypothesis, SUPPORTED, (ev.metric_fact, spread) + related, cause)


def _dependency_cause(ev: Evidence, name: str, slow: bool, score: float, evidence: tuple[str, ...],
                      headline: str) -> Cause:
    if slow:
        first_action = f"Set tight timeouts or open a circuit breaker on calls to {name}; check {name}'s health"
    else:
        first_action = f"Open a circuit breaker / fail fast on calls to {name}; check {name}'s health"
    return Cause(
        text=f"Dependency {name} is {'slow' if slow else 'failing'}",
        score=score,
        evidence=evidence + _common_evidence(ev, name),
        actions=(first_action, f"Check recent deploys, capacity and error logs of {name}"),
        headline=f"{headline}: fail fast on {name} and check its health.",
    )


def _one_instance(ev: Evidence) -> Finding:
    hypothesis = f"One bad pod, instance or node of {ev.owner} causes the {ev.problem}"
    members = _members(ev, INSTANCE_KEYS)
    best = _supported_suspect(ev, INSTANCE_KEYS)
    if best is None:
        return _unsupported(hypothesis, ev, members,
                            f"no pod, instance or node is over-represented among {ev.bad_noun}")
    version = _supported_suspect(ev, VERSION_KEYS)
    if version is not None and version.score >= best.score:
        subsumed = (f"{best.pair} is explained better by {version.pair} ({_share(version.bad_share)} vs "
                    f"{_share(version.good_share)}): it likely runs that version")
        return Finding(hypothesis, INSUFFICIENT, _family_facts(ev, members) + (subsumed,))
    noun = INSTANCE_NOUNS.get(best.key, "Instance")
    cause = Cause(
        text=f"{noun} {best.value} of {ev.owner} is unhealthy",
        score=best.score,
        evidence=(_share_line(ev, best),) + _common_evidence(ev),
        actions=(INSTANCE_ACTIONS.get(best.key, INSTANCE_ACTIONS["service.instance.id"]).format(value=best.value),),
        headline=f"{_share_line(ev, best)}: take {noun.lower()} {best.value} out of service.",
    )
    return Finding(hypothesis, SUPPORTED, _family_facts(ev, members), cause)


def _one_tenant(ev: Evidence) -> Finding:
    hypothesis = f"One tenant's traffic causes the {ev.problem}"
    members = _members(ev, TENANT_KEYS)
    best = _supported_suspect(ev, TENANT_KEYS)
    if best is None:
        return _unsupported(hypothesis, ev, members, f"no tenant is over-represented among {ev.bad_noun}")
    cause = Cause(
        text=(f"Tenant {best.value}: that client's behaviour or data, or a tenant-specific config, "
              f"breaks {ev.label}"),
        score=best.score,
        evidence=(_share_line(ev, best),) + _common_evidence(ev),
        actions=(f"Rate-limit or contact tenant {best.value}",
                 f"Check tenant-specific config, feature flags and recent data changes for tenant {best.value}"),
        headline=f"{_share_line(ev, best)}: rate-limit or contact that tenant.",
    )
    return Finding(hypothesis, SUPPORTED, _family_facts(ev, members), cause)


def _one_location(ev: Evidence) -> Finding:
    hypothesis = f"One availability zone or region is degraded for {ev.service}"
    members = _members(ev, LOCATION_KEYS)
    best = _supported_suspect(ev, LOCATION_KEYS)
    if best is None:
        return _unsupported(hypothesis, ev, members, f"no zone or region is over-represented among {ev.bad_noun}")
    noun = LOCATION_NOUNS.get(best.key, "Zone")
    cause = Cause(
        text=f"{noun} {best.value} is degraded",
        score=best.score,
        evidence=(_share_line(ev, best),) + _common_evidence(ev),
        actions=(f"Shift traffic away from {best.pair}",
                 f"Check the cloud provider's status and network health for {noun.lower()} {best.value}"),
        headline=f"{_share_line(ev, best)}: shift traffic away from {noun.lower()} {best.value}.",
    )
    return Finding(hypothesis, SUPPORTED, _family_facts(ev, members), cause)


def _load_or_capacity(ev: Evidence) -> Finding:
    hypothesis = "Load or capacity trouble affecting all requests alike (traffic surge, saturation)"
    concentrated = next((s for s in ev.suspects if _verdict(ev, s) == SUPPORTED), None)
    if concentrated is not None:
        sliced = (f"the {ev.problem} concentrate on one slice, which uniform load would not explain: "
                  f"{_share_line(ev, concentrated)}")
        return Finding(hypothesis, CONTRADICTED, (sliced,))
    return Finding(hypothesis, INSUFFICIENT, (_nothing_distinguishes(ev), ev.metric_fact,
                                              "request volume against baseline is not in the evidence"))


# Order matters only for ties: the more specific family first, like KEY_PRIORITY.
CAUSE_FAMILIES: tuple[Callable[[Evidence], Finding], ...] = (
    _new_deploy, _failing_dependency, _one_instance, _one_tenant, _one_location, _load_or_capacity,
)


# --------------------------------------------------------------------------- families of the behaviour types

def _spread(ev: Evidence, keys: tuple[str, ...]) -> BadValues | None:
    """The first counted key whose values spread over the bad requests: no one value dominates."""
    for key in keys:
        counted = ev.counted(key)
        if counted and counted.distinct >= 3 and counted.top and counted.top[0][1] <= SPREAD_MAX_TOP_SHARE:
            return counted
    return None


def _one_client(ev: Evidence, hypothesis: str, text: Callable[[Suspect], str],
                actions: Callable[[Suspect], tuple[str, ...]], advice: str, rollback_note: str) -> Finding:
    """A family whose cause is one client (tenant, user, address or agent) that sets the bad requests apart."""
    members = _members(ev, CLIENT_KEYS)
    best = _supported_suspect(ev, CLIENT_KEYS)
    if best is None:
        return _unsupported(hypothesis, ev, members,
                            f"no tenant, user, address or agent is over-represented among {ev.bad_noun}")
    cause = Cause(
        text=text(best), score=best.score, evidence=(_share_line(ev, best), ev.metric_fact) + _exemplar_line(ev),
        actions=actions(best), headline=f"{_share_line(ev, best)}: {advice}.", rollback_note=rollback_note)
    return Finding(hypothesis, SUPPORTED, _family_facts(ev, members), cause)


def _client_over_limit(ev: Evidence) -> Finding:
    return _one_client(
        ev, f"One client (tenant, user, address or agent) sends more than its limit to {ev.label}",
        lambda best: f"{best.pair} sends more requests to {ev.label} than its limit allows",
        lambda best: (f"Contact {best.pair} or slow it down at the source; raise its quota only if the traffic is "
                      "legitimate", f"Keep the limit on {ev.label} enforced meanwhile: it protects the other clients"),
        "contact or slow down that client, and keep the limit", "the refusals follow one client, not a version")


def _one_client_refused(ev: Evidence) -> Finding:
    hypothesis = "One client is refused again and again: hostile, or deployed with wrong or expired credentials"
    if _many_accounts(ev) is not None and _supported_suspect(ev, CLIENT_KEYS) is not None:
        # One client trying many accounts: that is the credential stuffing cause.
        facts = _family_facts(ev, _members(ev, CLIENT_KEYS))
        return Finding(hypothesis, SUPPORTED, facts + ("it tries many accounts: credential stuffing",))
    return _one_client(
        ev, hypothesis,
        lambda best: f"{best.pair} keeps failing authentication on {ev.label}: wrong or expired credentials, or a probe",
        lambda best: (f"Block or throttle {best.pair} at the edge",
                      f"Review authentication and access logs for {ev.label} around onset",
                      "Rotate any credentials the client used if compromise is confirmed",
                      "Keep all security controls (auth, rate limits, WAF rules) in force while investigating"),
        "block or throttle that client and review the auth logs", "the refusals follow one client, not a version")


def _client_brings_load(ev: Evidence) -> Finding:
    return _one_client(
        ev, f"One client's traffic brings the extra load on {ev.label}",
        lambda best: f"{best.pair} brings the extra load that saturates {ev.label}",
        lambda best: (f"Rate-limit or shed {best.pair}'s traffic on {ev.label} until capacity is added",
                      f"Scale out {ev.service} meanwhile: more replicas or higher concurrency limits"),
        f"throttle that client and scale out {ev.service}", "the load comes from one client, not from a version")


def _limit_too_low(ev: Evidence) -> Finding:
    hypothesis = f"The limit on {ev.label} is too low for its current traffic: many clients are refused alike"
    concentrated = _supported_suspect(ev, CLIENT_KEYS)
    if concentrated is not None:
        return Finding(hypothesis, CONTRADICTED,
                       (f"the refusals concentrate on one client: {_share_line(ev, concentrated)}",))
    spread = _spread(ev, ("tenant.id", "client.address"))
    if spread is None:
        return Finding(hypothesis, INSUFFICIENT, (ev.metric_fact, "how the refusals spread over clients is not known"))
    line = spread.line(ev.bad_noun)
    cause = Cause(
        text=f"The rate limit on {ev.label} (or a pool it shares) is too low for current traffic, or a change lowered it",
        score=SPREAD_SCORE,
        evidence=(line, ev.metric_fact),
        actions=(f"Check the rate limiter's configuration for {ev.label} and any recent change to it",
                 f"Compare request volume on {ev.label} with its baseline; raise the limit if the growth is legitimate"),
        headline=f"{line}: the limit itself is too low for current traffic.",
    )
    return Finding(hypothesis, SUPPORTED, (line,), cause)


def _many_accounts(ev: Evidence) -> BadValues | None:
    """The enduser.id count when the refused requests try many accounts, else None."""
    accounts = ev.counted("enduser.id")
    if accounts is None or accounts.distinct < max(STUFFING_MIN_ACCOUNTS, STUFFING_MIN_ACCOUNT_SHARE * accounts.bad_requests):
        return None
    return accounts


def _credential_stuffing(ev: Evidence) -> Finding:
    hypothesis = "Credential stuffing: many accounts tried from few clients"
    accounts = ev.counted("enduser.id")
    if accounts is None or accounts.bad_requests < MIN_BAD_SAMPLE:
        return Finding(hypothesis, INSUFFICIENT, (f"the {ev.bad_noun} carry no enduser.id to count accounts by",))
    facts = (accounts.line(ev.bad_noun),)
    if _many_accounts(ev) is None:
        verdict = CONTRADICTED if accounts.distinct <= 2 else INSUFFICIENT
        return Finding(hypothesis, verdict, facts + (f"the refusals are for {accounts.distinct} account(s), not a list",))
    source = _supported_suspect(ev, ("client.address", "user_agent.original", "tenant.id"))
    if source is not None:
        facts += (_share_line(ev, source),)
        block = (f"Block or throttle {source.pair} at the edge (its raw value is on the exemplar traces; "
                 "otel-ai keeps addresses only as hashes)")
    else:
        block = "Find the clients behind the refused requests on the exemplar traces and block or throttle them at the edge"
    cause = Cause(
        text=f"Credential stuffing on {ev.label}: {accounts.distinct} accounts tried"
             + (f", mostly from {source.pair}" if source else ""),
        score=min(1.0, ONE_SOURCE_SCORE + (source.score * 0.4 if source else 0.0)),
        evidence=facts + (ev.metric_fact,) + _exemplar_line(ev),
        actions=(block,
                 "Protect the targeted accounts: require MFA or reset passwords of accounts that logged in from it",
                 f"Review authentication logs for {ev.label} around onset",
                 "Keep all security controls (auth, rate limits, WAF rules) in force while investigating"),
        headline=f"{accounts.line(ev.bad_noun)}: credential stuffing; block the source and protect those accounts.",
        rollback_note="an attack is not fixed by a rollback; contain the client instead",
    )
    return Finding(hypothesis, SUPPORTED, facts, cause)


def _retrying_caller(ev: Evidence) -> Finding:
    hypothesis = f"One caller retries its calls to {ev.service} without backoff or budget"
    best = _supported_suspect(ev, CALLER_KEYS)
    callers = ev.counted("service.name")
    if best is not None:
        name, facts, score = best.value, (_share_line(ev, best),), best.score
    elif callers and callers.top and callers.top[0][1] >= ONE_SOURCE_SHARE:
        name, facts, score = callers.top[0][0], (callers.line(ev.bad_noun),), ONE_SOURCE_SCORE
    elif callers and _spread(ev, ("service.name",)):
        return Finding(hypothesis, CONTRADICTED, (f"the retries come from several callers alike: "
                                                  f"{callers.line(ev.bad_noun)}",))
    else:
        return Finding(hypothesis, INSUFFICIENT, (f"which service sent the {ev.bad_noun} is not known",))
    cause = Cause(
        text=f"{name} retries its calls to {ev.service} without backoff: {ev.metric_fact}",
        score=score,
        evidence=facts + (ev.metric_fact,) + _common_evidence(ev, ev.service),
        actions=(f"Cap {name}'s retries to {ev.service}: exponential backoff with jitter and a retry budget",
                 f"Open a circuit breaker on {name}'s calls to {ev.service} while it fails",
                 f"Check that {name}'s timeout for {ev.service} is longer than {ev.service}'s usual latency"),
        headline=f"{facts[0]}: cap {name}'s retries and fail fast on {ev.service}.",
    )
    return Finding(hypothesis, SUPPORTED, facts, cause)


def _struggling_dependency(ev: Evidence) -> Finding:
    hypothesis = f"{ev.service} fails or slows down, and the retries multiply the load on it"
    related = tuple(r.fact() for r in ev.related_dependencies if r.service == ev.service)
    timeouts = [e for e in ev.top_errors if "timeout" in f"{e[0]} {e[1]}".lower() or "timed out" in e[1].lower()]
    if not related and not timeouts:
        return Finding(hypothesis, INSUFFICIENT, (f"no open incident on {ev.service} and no timeout among the errors "
                                                  f"of the {ev.bad_noun}",))
    facts = related + tuple(_error_line(e) for e in timeouts[:1])
    cause = _dependency_cause(ev, ev.service, bool(timeouts), RELATED_ONLY_SCORE + (RELATED_INCIDENT_BONUS if related else 0),
                              facts, f"{ev.service} is struggling and retries pile onto it")
    return Finding(hypothesis, SUPPORTED, facts, cause)


def _capacity_short(ev: Evidence) -> Finding:
    hypothesis = f"{ev.service} is short of capacity for its current load"
    rate, usual = ev.detail("request_rate_per_s"), ev.detail("baseline_request_rate_per_s")
    if rate is None or not usual:
        return Finding(hypothesis, INSUFFICIENT, ("request volume against baseline is not in the evidence",))
    load = rate / usual
    fact = f"request rate {rate:.1f}/s is {load:.1f}x the usual {usual:.1f}/s"
    if load < 1.2:
        return Finding(hypothesis, CONTRADICTED, (fact + ": the load did not rise",))
    eta = ev.detail("time_to_saturation_s")
    cause = Cause(
        text=f"{ev.service} runs short of capacity at {load:.1f}x its usual load on {ev.label}",
        score=SPREAD_SCORE + (0.1 if eta is not None else 0.0),
        evidence=(fact, ev.metric_fact),
        actions=(f"Scale out {ev.service}: more replicas, or higher concurrency and connection-pool limits",
                 f"Check the autoscaler's limits and the CPU and memory limits of {ev.service}"),
        headline=f"{ev.metric_fact}: scale out {ev.service}.",
        rollback_note="a capacity warning is about load, not a version change",
    )
    return Finding(hypothesis, SUPPORTED, (fact,), cause)


def _recovered(ev: Evidence) -> Finding:
    hypothesis = f"The problem on {ev.label} has cleared"
    value, threshold = ev.detail("current_value"), ev.detail("threshold")
    if value is None or not threshold:
        return Finding(hypothesis, INSUFFICIENT, (ev.metric_fact,))
    if value >= threshold:
        return Finding(hypothesis, CONTRADICTED, (f"still at or above its threshold: {ev.metric_fact}",))
    cause = Cause(
        text=f"The problem on {ev.label} has cleared: {ev.metric_fact}",
        score=RECOVERED_SCORE + 0.4 * (1.0 - value / threshold),
        evidence=(ev.metric_fact,) + _exemplar_line(ev),
        actions=(f"Confirm what fixed {ev.label} (rollback, dependency recovery, traffic drop) and record it",
                 "Keep watching for a relapse during the cooldown before closing related incidents"),
        headline=f"{ev.label} is back under its threshold ({ev.metric_fact}).",
        rollback_note="the problem has cleared; nothing to roll back",
    )
    return Finding(hypothesis, SUPPORTED, (ev.metric_fact,), cause)


# The cause families of each type; the first four types use CAUSE_FAMILIES.
TYPE_FAMILIES: dict[str, tuple[Callable[[Evidence], Finding], ...]] = {
    "RATE_LIMIT_BREACH": (_client_over_limit, _limit_too_low, _new_deploy),
    "SECURITY_ANOMALY": (_credential_stuffing, _one_client_refused, _new_deploy),
    "RETRY_STORM": (_retrying_caller, _struggling_dependency, _new_deploy),
    "CAPACITY_WARNING": (_client_brings_load, _capacity_short, _new_deploy),
    "RECOVERY_SIGNAL": (_recovered,),
}


# --------------------------------------------------------------------------- ranking

def _probability(score: float) -> int:
    return round(min(MAX_CAUSE_PROBABILITY, BASE_PROBABILITY + PROBABILITY_PER_SCORE * max(0.0, score)))


def _rank(causes: list[Cause]) -> list[tuple[Cause, int]]:
    """Most likely first (stable on ties), with probabilities that sum to at most 100."""
    ranked = sorted(((c, _probability(c.score)) for c in causes), key=lambda cp: -cp[1])
    total = sum(p for _, p in ranked)
    if total <= 100:
        return ranked
    return [(c, math.floor(p * 100 / total)) for c, p in ranked]


def _generic_cause(ev: Evidence) -> Cause:
    return Cause(
        text=(f"No single version, dependency, instance, tenant or zone stands out: a cause shared by all "
              f"requests to {ev.label} (load, capacity, shared config or an unobserved dependency)"),
        score=0.0,
        evidence=(_nothing_distinguishes(ev), ev.metric_fact) + _common_evidence(ev),
        actions=(),
        headline=(f"Nothing distinguishes {ev.bad_noun} of {ev.label} from healthy ones; "
                  "inspect exemplar traces and recent changes."),
    )


def _investigation_actions(ev: Evidence) -> tuple[str, ...]:
    actions = [f"Review recent changes to {ev.service} around onset: deploys, config, feature flags, infrastructure"]
    for version, seconds in ev.new_versions[:1]:
        actions.append(f"Check what changed in {ev.owner} service.version={version} "
                       f"(first seen {_ago(seconds)} before onset)")
    if ev.top_errors:
        actions.append(f"Search {ev.service}'s logs for the top error {ev.top_errors[0][0] or ev.top_errors[0][1]}")
    if ev.latency:
        actions.append(f"Check saturation of {ev.service}: CPU, memory, connection pools, queue depth")
    actions.append(f"Compare request volume on {ev.label} with its baseline to rule out a traffic surge")
    return tuple(actions)


def _exemplar_action(ev: Evidence) -> tuple[str, ...]:
    if not ev.exemplars:
        return ()
    first, rest = ev.exemplars[0], ev.exemplars[1:]
    return (f"Inspect exemplar trace {first}" + (f" (also {', '.join(rest)})" if rest else ""),)


def _rollback_reasoning(ev: Evidence, deploy: Finding | None, ranked: list[tuple[Cause, int]], rollback: bool) -> str:
    top, probability = ranked[0] if ranked else (None, 0)
    if top is not None and top.rollback_note:
        if rollback:
            return f"Roll back: {top.rollback_note} (probability {probability}%)."
        if top.new_deploy:
            return f"{top.rollback_note}, but at only {probability}% probability; confirm before rolling back."
        return f"No rollback: {top.rollback_note}."
    if deploy is not None and deploy.verdict == SUPPORTED and top is not None:
        return f"No rollback for now: the leading cause is {top.text}; the version correlation is weaker."
    if deploy is not None and deploy.verdict == CONTRADICTED:
        return f"No rollback: {deploy.facts[-1]}, so the {ev.problem} do not follow the version."
    if ev.new_versions:
        version, seconds = ev.new_versions[0]
        return (f"No rollback indicated: service.version={version} was first seen {_ago(seconds)} before onset, "
                f"but {ev.bad_noun} do not concentrate on it.")
    return "No version change correlates with the failures."


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _confidence(probability: float, incident: Incident) -> float:
    detection = min(1.0, max(0.0, _number(incident.confidence) or 0.0))
    return round(min(MAX_OFFLINE_CONFIDENCE, probability * detection), 1)


def _diagnose(incident: Incident, reason: str, related: list[dict],
              families: tuple[Callable[[Evidence], Finding], ...]) -> AnalysisAnswer:
    ev = _gather_evidence(incident, related)
    findings = [family(ev) for family in families]
    deploy = next((f for family, f in zip(families, findings) if family is _new_deploy), None)
    ranked = _rank([f.cause for f in findings if f.cause is not None])
    enough = bool(ranked)
    actions: list[str] = []
    if ranked:
        for cause, _ in ranked:
            actions.extend(cause.actions)
        actions.extend(_exemplar_action(ev))
    else:
        ranked = [(_generic_cause(ev), GENERIC_CAUSE_PROBABILITY)]
        actions.extend(_exemplar_action(ev) + _investigation_actions(ev))
    top, top_probability = ranked[0]
    rollback = top.new_deploy and top_probability >= ROLLBACK_MIN_PROBABILITY
    return AnalysisAnswer(
        summary=f"Offline analysis ({reason}): {top.headline}",
        enough_evidence=enough,
        hypotheses=[Hypothesis(hypothesis=f.hypothesis, verdict=f.verdict, evidence=list(f.facts)) for f in findings],
        root_causes=[RootCause(cause=c.text, probability=p, evidence=list(c.evidence)) for c, p in ranked],
        actions=_dedupe(actions),
        rollback_needed=rollback,
        rollback_reasoning=_rollback_reasoning(ev, deploy, ranked if enough else [], rollback),
        user_impact=ev.user_impact,
        confidence=_confidence(top_probability, incident),
    )


# --------------------------------------------------------------------------- type-specific answers

@dataclass(frozen=True, slots=True)
class Playbook:
    """A short answer for otel-ai's own alerts, which are not about requests (COST_ALERT)."""

    headline: str
    cause: str
    probability: int
    facts: tuple[str, ...]
    actions: tuple[str, ...]
    user_impact: str
    rollback_reasoning: str


def _cost_alert(incident: Incident, ev: Evidence) -> Playbook:
    data = incident.data or {}
    spent, limit = _number(data.get("current_value")), _number(data.get("threshold"))
    if spent is not None and limit is not None:
        facts = (f"AI analysis spend today ${spent:.2f} of the ${limit:.2f} budget",)
    else:
        facts = (ev.metric_fact,)
    return Playbook(
        headline="AI analysis budget for today is spent; further incidents get offline analysis until 00:00 UTC.",
        cause="The daily AI analysis budget (budget.maxCostPerDay) is spent",
        probability=95, facts=facts,
        actions=("Raise budget.maxCostPerDay or AI_MAX_COST_PER_DAY if more AI analyses are needed today",
                 "Review which incidents used today's AI budget (an incident storm or a noisy threshold?)"),
        user_impact="No direct user impact: incidents are still detected and get offline analysis instead.",
        rollback_reasoning="A budget alert is not caused by a deploy; nothing to roll back.",
    )


TYPE_PLAYBOOKS: dict[str, Callable[[Incident, Evidence], Playbook]] = {
    "COST_ALERT": _cost_alert,
}


def _playbook_answer(incident: Incident, reason: str, related: list[dict],
                     playbook: Callable[[Incident, Evidence], Playbook]) -> AnalysisAnswer:
    ev = _gather_evidence(incident, related)
    book = playbook(incident, ev)
    return AnalysisAnswer(
        summary=f"Offline analysis ({reason}): {book.headline}",
        enough_evidence=True,
        hypotheses=[Hypothesis(hypothesis=book.cause, verdict=SUPPORTED, evidence=list(book.facts))],
        root_causes=[RootCause(cause=book.cause, probability=book.probability,
                               evidence=list(book.facts + _exemplar_line(ev)))],
        actions=_dedupe(list(book.actions + _exemplar_action(ev))),
        rollback_needed=False,
        rollback_reasoning=book.rollback_reasoning,
        user_impact=book.user_impact,
        confidence=_confidence(book.probability, incident),
    )


# --------------------------------------------------------------------------- entry point

def analyze_offline(incident: Incident, reason: str, related: list[dict] | None = None) -> AnalysisAnswer:
    """Deterministic diagnosis from the incident's own evidence.

    `reason` (e.g. "no_api_key", "budget_exhausted", "api_error: 529 overloaded") is named in
    the summary so readers know the answer is offline. `related`: other open incidents, each
    {"type", "service", "route", "subject_kind", "summary", "data"}; open dependency
    incidents among them support the failing-dependency hypothesis.
    """
    why = _clip(reason) or "offline"
    playbook = TYPE_PLAYBOOKS.get(incident.type)
    if playbook is not None:
        return _playbook_answer(incident, why, related or [], playbook)
    return _diagnose(incident, why, related or [], TYPE_FAMILIES.get(incident.type, CAUSE_FAMILIES))
