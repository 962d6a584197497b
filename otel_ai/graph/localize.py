"""From anomalous routes or dependencies down the call graph to the root cause.

Why own contributions: a request's time splits, without overlap, into the own (self)
time of every span in its tree: each route's own work, each edge's overhead (the wire
and queues in front of an instrumented callee), each call to an uninstrumented
dependency. A fault changes the own contribution of the component where it sits and
nothing else; every caller above it only waits longer, or fails because a callee failed
(errors are attributed to where they originate: a failed span none of whose children
failed). So, for each anomalous start:

1. Δ = the start's change, now vs its baseline: mean latency (ms) or error rate. A start
   is a route, or a dependency (all edges that call it, weighted by calls).
2. Walk down the call graph from it, following an edge only when its total change, times
   the calls it makes per start request, is at least FOLLOW_SHARE of Δ and significant
   (z >= Z_MIN): the anomalous edges.
3. At each route and edge reached, take the change of the own contribution: own time
   (route: the service's own code; edge to an instrumented callee: the network into that
   service; edge to an uninstrumented one: the dependency) or, for errors, the rate of
   errors originating there. explained = change x calls per start request, summed over
   the paths that reach the component.
4. score = explained / Δ, clipped to [0, 1] and averaged over the starts: the share of
   the anomaly the component accounts for. Candidates need score >= MIN_SCORE and
   z >= Z_MIN. The highest score wins; candidates within TIE of it go to the deepest (a
   cause below explains its callers, never the other way round).
5. A winning service is narrowed to one pod when that pod holds >= POD_SHARE of the
   service's excess own time (or error origins) against the service's baseline and,
   per request, at least SPREAD times the other pods' excess (a service-wide slowdown
   is not one pod's); or to a version when the pods of one version hold >= VERSION_SHARE
   and SPREAD times the others' excess per request, while another version runs too.

z-scores compare means with their standard errors (variances come from the sums of
squares); rates use the baseline rate's binomial error, floored at RATE_FLOOR.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from otel_ai.graph.components import EDGE, NONE, POD, ROUTE, SERVICE_FLAG
from otel_ai.graph.stats import COUNT, ERRORS, ORIGINS, SELF, SELF_SQ, TOTAL, TOTAL_SQ, GraphSnapshot
from otel_ai.model import DEPENDENCY

LATENCY, ERRORS_SIGNAL = "latency", "errors"
Z_MIN = 3.0
FOLLOW_SHARE = 0.1
MIN_SCORE = 0.1
TIE = 0.1
POD_SHARE = 0.6
VERSION_SHARE = 0.8
SPREAD = 3.0
MIN_BASE = 5.0  # requests in the baseline before a component's change is judged
RATE_FLOOR = 0.001
MAX_DEPTH = 12
MAX_STEPS = 5000  # components visited per start: a bound whatever the graph's shape


@dataclass(frozen=True, slots=True)
class Start:
    """An anomalous subject (SubjectTable id) and what went wrong with it."""

    subject_id: int
    signal: str  # LATENCY or ERRORS_SIGNAL


@dataclass(slots=True)
class Candidate:
    kind: str  # service | pod | version | network | dependency
    service: str | None = None  # the service whose code, pod or inbound network it is
    pod: str | None = None
    version: str | None = None
    dependency: str | None = None
    operation: str | None = None  # the route where the change is largest (for network: the one called)
    score: float = 0.0
    depth: int = 0  # service hops below the anomalous subject
    evidence: list[dict] = field(default_factory=list)

    def root_cause(self) -> dict:
        """The incident's ``root_cause`` field."""
        return {"kind": self.kind, "service": self.service, "pod": self.pod, "version": self.version,
                "dependency": self.dependency, "operation": self.operation, "score": round(self.score, 3),
                "evidence": self.evidence}


@dataclass(slots=True)
class _Found:
    explained: float = 0.0
    best: float = -np.inf
    depth: int = 0
    z: float = 0.0
    path: list = field(default_factory=list)
    operation: str | None = None
    service: str | None = None  # for a dependency: the service calling it on the best path


class _Metric:
    """Per component: now, baseline, change and its z-score for one measure."""

    def __init__(self, snap: GraphSnapshot, total: int, square: int | None):
        n_now, n_base = snap.now[:, COUNT], snap.base[:, COUNT]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.now = np.where(n_now > 0, snap.now[:, total] / n_now, np.nan)
            self.base = np.where(n_base > 0, snap.base[:, total] / n_base, np.nan)
            if square is None:  # a rate
                p = np.clip(np.nan_to_num(self.base), RATE_FLOOR, 1.0 - RATE_FLOOR)
                error = np.sqrt(p * (1 - p) / np.maximum(n_now, 1))
            else:
                var_now = np.maximum(snap.now[:, square] / n_now - self.now**2, 0)
                var_base = np.maximum(snap.base[:, square] / n_base - self.base**2, 0)
                error = np.sqrt(var_now / np.maximum(n_now, 1) + var_base / np.maximum(n_base, 1) + 1e-4)
        judged = (n_now > 0) & (n_base >= MIN_BASE)
        self.delta = np.where(judged, self.now - self.base, 0.0)
        self.z = np.where(judged, self.delta / error, 0.0)


class _Search:
    def __init__(self, snap: GraphSnapshot):
        self.snap = snap
        self.n_now = snap.now[:, COUNT]
        self.measures = {
            LATENCY: (_Metric(snap, TOTAL, TOTAL_SQ), _Metric(snap, SELF, SELF_SQ)),
            ERRORS_SIGNAL: (_Metric(snap, ERRORS, None), _Metric(snap, ORIGINS, None)),
        }
        kind, a, b = snap.kind, snap.a, snap.b
        self.route_component = {int(a[i]): i for i in np.flatnonzero((kind == ROUTE) & (a < SERVICE_FLAG)).tolist()}
        self.edges_from: dict[int, list[int]] = {}
        self.edges_to: dict[int, list[int]] = {}
        for i in np.flatnonzero((kind == EDGE) & (b < SERVICE_FLAG)).tolist():
            self.edges_from.setdefault(int(a[i]), []).append(i)
            self.edges_to.setdefault(int(b[i]), []).append(i)

    # ---- names
    def _route_name(self, route: int) -> str:
        s = self.snap.subjects[route]
        return f"{s.service} {s.method} {s.route}".replace("  ", " ")

    def _caller_service(self, edge: int) -> str:
        caller = int(self.snap.a[edge])
        if caller & SERVICE_FLAG and caller != NONE:
            return self.snap.services[caller & ~SERVICE_FLAG]
        return self.snap.subjects[caller].service if caller != NONE else "?"

    def _edge_name(self, edge: int) -> str:
        return f"{self._caller_service(edge)} → {self.snap.subjects[int(self.snap.b[edge])].service}"

    def _hop(self, component: int, name: str, metric: str, measure: _Metric, calls: float) -> dict:
        scale = 100.0 if metric.endswith("%") else 1.0
        return {"component": name, "metric": metric, "baseline": _round(measure.base[component] * scale),
                "now": _round(measure.now[component] * scale), "calls_per_request": round(calls, 2)}

    # ---- the walk
    def run(self, start: Start) -> dict[tuple, _Found]:
        self.found: dict[tuple, _Found] = {}
        self.steps = 0
        self.total, self.own = self.measures[start.signal]
        self.latency = start.signal == LATENCY
        subject = self.snap.subjects[start.subject_id]
        if subject.kind == DEPENDENCY:
            edges = self.edges_to.get(start.subject_id, [])
            calls = self.n_now[edges].sum() if edges else 0.0
            if calls <= 0:
                return {}
            weights = self.n_now[edges] / calls
            self.delta = float((weights * self.total.delta[edges]).sum())
            if self.delta <= 0 or max(self.total.z[edges]) < Z_MIN:
                return {}
            for edge, weight in zip(edges, weights.tolist()):
                self._edge(edge, weight, 0, [], {-1})
        else:
            component = self.route_component.get(start.subject_id)
            if component is None or self.total.delta[component] <= 0 or self.total.z[component] < Z_MIN:
                return {}
            self.delta = float(self.total.delta[component])
            self._route(start.subject_id, 1.0, 0, [], {start.subject_id})
        return self.found

    def _metric_names(self) -> tuple[str, str]:
        return ("latency_ms", "own_ms") if self.latency else ("error_rate_%", "origin_rate_%")

    def _route(self, route: int, mult: float, depth: int, path: list, seen: set) -> None:
        component = self.route_component.get(route)
        self.steps += 1
        if component is None or self.steps > MAX_STEPS:
            return
        total_name, own_name = self._metric_names()
        name = self._route_name(route)
        path = path + [self._hop(component, name, total_name, self.total, mult)]
        own_hop = self._hop(component, f"{name} (own)", own_name, self.own, mult)
        self._record(("service", self.snap.subjects[route].service), component, mult, depth, path + [own_hop], name)
        calls_in = self.n_now[component]
        if depth >= MAX_DEPTH or calls_in <= 0:
            return
        for edge in self.edges_from.get(route, ()):
            calls = mult * self.n_now[edge] / calls_in
            if calls * self.total.delta[edge] >= FOLLOW_SHARE * self.delta and self.total.z[edge] >= Z_MIN:
                self._edge(edge, calls, depth, path, seen)

    def _edge(self, edge: int, calls: float, depth: int, path: list, seen: set) -> None:
        total_name, own_name = self._metric_names()
        name = self._edge_name(edge)
        path = path + [self._hop(edge, name, total_name.replace("latency", "call"), self.total, calls)]
        callee = int(self.snap.c[edge])
        dependency = self.snap.subjects[int(self.snap.b[edge])].service
        if callee == NONE:  # the call is all the dependency's own time: the hop above says it
            self._record(("dependency", dependency), edge, calls, depth + 1, path, None, self._caller_service(edge))
            return
        own_hop = self._hop(edge, f"{name} (network)", own_name.replace("own", "overhead"), self.own, calls)
        callee_service = self.snap.subjects[callee].service
        self._record(("network", callee_service), edge, calls, depth + 1, path + [own_hop], self._route_name(callee))
        if callee not in seen:
            self._route(callee, calls, depth + 1, path, seen | {callee})

    def _record(self, key: tuple, component: int, calls: float, depth: int, path: list, operation: str | None,
                service: str | None = None) -> None:
        explained = calls * float(self.own.delta[component])
        found = self.found.setdefault(key, _Found())
        found.explained += explained
        found.z = max(found.z, float(self.own.z[component]))
        if explained > found.best:
            found.best, found.depth, found.path, found.operation, found.service = explained, depth, path, operation, service


def localize(snap: GraphSnapshot, starts: list[Start]) -> list[Candidate]:
    """Candidates for the root cause of `starts`, best first ([] when nothing changed).
    Starts of one incident or problem share a signal; a winning service is narrowed to a
    pod or version on the first start's signal."""
    return _localize(_Search(snap), starts)


def localize_each(snap: GraphSnapshot, starts: list[Start]) -> list[list[Candidate]]:
    """localize() for each start on its own, over one index of the graph (one slot's anomalies)."""
    search = _Search(snap)
    return [_localize(search, [start]) for start in starts]


def _localize(search: _Search, starts: list[Start]) -> list[Candidate]:
    snap = search.snap
    per_start: dict[tuple, list[tuple[float, _Found]]] = {}
    for start in starts:
        for key, found in search.run(start).items():
            if found.z >= Z_MIN:
                per_start.setdefault(key, []).append((float(np.clip(found.explained / search.delta, 0.0, 1.0)), found))
    candidates = []
    for (kind, name), results in per_start.items():
        score = sum(share for share, _ in results) / len(starts)
        if score < MIN_SCORE:
            continue
        # The evidence: the longest chain among the starts it explains (nearly) as well,
        # so that it reads from the highest anomalous route down to the root.
        top_share = max(share for share, _ in results)
        found = max((f for share, f in results if share >= (1 - TIE) * top_share), key=lambda f: f.depth)
        candidate = Candidate(kind, score=score, depth=found.depth, evidence=found.path, operation=found.operation,
                              service=found.service)
        if kind == "dependency":
            candidate.dependency = name
        else:
            candidate.service = name
        candidates.append(candidate)
    if not candidates:
        return []
    candidates.sort(key=lambda c: -c.score)
    top = max(c.score for c in candidates)
    winner = max((c for c in candidates if c.score >= (1 - TIE) * top), key=lambda c: (c.depth, c.score))
    candidates.remove(winner)
    if winner.kind == "service":
        _narrow(snap, winner, starts[0].signal)
    return [winner] + candidates


def _narrow(snap: GraphSnapshot, candidate: Candidate, signal: str) -> None:
    """Service -> pod or version, when the excess sits on one pod or on one version's pods."""
    pods = [i for i in np.flatnonzero(snap.kind == POD).tolist()
            if snap.resources[int(snap.a[i])].service == candidate.service]
    if not pods:
        return
    field_ = SELF if signal == LATENCY else ORIGINS
    base_n = snap.base[pods, COUNT].sum()
    if base_n <= 0:
        return
    usual = snap.base[pods, field_].sum() / base_n  # the service's own time per request, or origin rate
    now_n = snap.now[pods, COUNT]
    excess = snap.now[pods, field_] - usual * now_n
    running = now_n > 0
    positive = np.maximum(excess, 0)
    if running.sum() < 2 or positive.sum() <= 0:
        return
    infos = [snap.resources[int(snap.a[i])] for i in pods]
    top = int(np.argmax(excess))
    unit = "own_ms" if signal == LATENCY else "origin_rate_%"
    scale = 1.0 if signal == LATENCY else 100.0

    def hop(name: str, index: np.ndarray) -> dict:
        now = snap.now[np.array(pods)[index], field_].sum() / max(now_n[index].sum(), 1e-9)
        return {"component": name, "metric": unit, "baseline": _round(usual * scale), "now": _round(now * scale),
                "share_of_excess": round(float(positive[index].sum() / positive.sum()), 3)}

    def stands_out(members: list[int]) -> bool:
        """The members' excess per request is SPREAD times the other running pods'."""
        inside = np.zeros(len(pods), dtype=bool)
        inside[members] = True
        others = running & ~inside
        mine = excess[inside].sum() / max(now_n[inside].sum(), 1e-9)
        rest = excess[others].sum() / max(now_n[others].sum(), 1e-9)
        return mine > 0 and mine >= SPREAD * max(rest, 0.0)

    versions: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        if running[i]:
            versions.setdefault(info.version, []).append(i)
    if positive[top] / positive.sum() >= POD_SHARE and stands_out([top]):
        version_pods = versions.get(infos[top].version, [])
        candidate.kind = "version" if len(versions) >= 2 and version_pods == [top] else "pod"
        candidate.pod, candidate.version = infos[top].instance, infos[top].version
        candidate.evidence = candidate.evidence + [hop(f"{candidate.service} pod {infos[top].instance}", np.array([top]))]
        return
    if len(versions) >= 2:
        version, members = max(versions.items(), key=lambda kv: positive[kv[1]].sum())
        if positive[members].sum() / positive.sum() >= VERSION_SHARE and stands_out(members):
            candidate.kind, candidate.version = "version", version
            candidate.evidence = candidate.evidence + [hop(f"{candidate.service} version {version}", np.array(members))]


def _round(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 2)
