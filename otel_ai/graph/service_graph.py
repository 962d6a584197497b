"""The service graph stage: the join, the component table and their stats, behind the two
calls the pipeline makes.

    graph.add(batch)              per decoded SpanBatch (cheap: queues columns)
    graph.close_slot(slot)        per closed window slot, after the windows' own close:
                                  joins every span that ended in it or before, and adds
                                  what they measured to the component stats
    graph.snapshot(slot, slots)   when localising: now (the last `slots`) vs the baseline
    graph.state() / restore(..)   the baselines by name, for persistence across a restart

Memory is capped by three numbers: ``max_spans`` join rows (66 bytes each; past the cap the
join keeps a consistent sample of whole traces),
``max_components`` components (~330 bytes each in stats and table), nothing per trace
or per request beyond the join rows: 63 MiB + 21 MiB at the defaults. The join's rows and
the stats are allocated, and resident, from the start.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from otel_ai.decode import SpanBatch
from otel_ai.graph.components import (
    EDGE,
    MAX_COMPONENTS,
    NONE,
    ROUTE,
    SERVICE_FLAG,
    ComponentTable,
    edge_keys,
    route_keys,
)
from otel_ai.graph.join import MAX_SPANS, ORPHAN_WAIT_NS, Observations, TraceJoin
from otel_ai.graph.stats import COUNT, ComponentStats, GraphSnapshot
from otel_ai.resources import ResourceTable
from otel_ai.subjects import SubjectTable


class ServiceGraph:
    def __init__(self, slot_ns: int, subjects: SubjectTable, resources: ResourceTable, max_spans: int = MAX_SPANS,
                 max_components: int = MAX_COMPONENTS, orphan_wait_ns: int = ORPHAN_WAIT_NS):
        self.slot_ns = slot_ns
        self.subjects = subjects
        self.resources = resources
        self.components = ComponentTable(max_components)
        self.join = TraceJoin(self.components, max_spans, orphan_wait_ns)
        self.stats = ComponentStats(slot_ns, max_components)

    def add(self, batch: SpanBatch) -> None:
        self.join.add(batch)

    def close_slot(self, slot: int) -> Observations:
        observations = self.join.advance((slot + 1) * self.slot_ns)
        self.stats.add(observations)
        self.stats.roll_to(slot)
        return observations

    def snapshot(self, last_slot: int, slots: int) -> GraphSnapshot:
        return self.stats.snapshot(last_slot, slots, self.components, self.subjects.subjects, self.subjects.services,
                                   self.resources.resources)

    def state(self) -> list[dict[str, Any]]:
        """What each route and edge learnt, keyed by names (ids live and die with the process),
        for whoever persists baselines. Pods are left out: a restart or a deploy brings new ones."""
        kind, a, b, c = self.components.fields()
        base = self.stats.baseline
        subjects = self.subjects.subjects
        out = []
        for cid in np.flatnonzero(((kind == ROUTE) | (kind == EDGE))[: base.shape[0]]).tolist():
            if base[cid, COUNT] <= 0:
                continue
            if kind[cid] == ROUTE:
                name: list = ["route", *_route_name(subjects[a[cid]])]
            else:
                caller = (["service", self.subjects.services[a[cid] & ~SERVICE_FLAG]] if a[cid] & SERVICE_FLAG
                          else ["route", *_route_name(subjects[a[cid]])])
                callee = None if c[cid] == NONE else _route_name(subjects[c[cid]])
                name = ["edge", caller, subjects[b[cid]].service, callee]
            out.append({"component": name, "sums": base[cid].tolist()})
        return out

    def restore(self, state: list[dict[str, Any]]) -> int:
        """Baselines saved by state(), before traffic arrives; returns how many were restored."""
        keys, sums = [], []
        for entry in state:
            name = entry["component"]
            if name[0] == "route":
                keys.append(route_keys(np.array([self.subjects.route(*name[1:])]))[0])
            else:
                caller_kind, *caller = name[1]
                route = self.subjects.route(*caller) if caller_kind == "route" else -1
                service = self.subjects.service_id(caller[0]) if caller_kind == "service" else -1
                callee = self.subjects.route(*name[3]) if name[3] else NONE
                keys.append(edge_keys(np.array([route]), np.array([service]),
                                      np.array([self.subjects.dependency(name[2])]), np.array([callee]))[0])
            sums.append(entry["sums"])
        if not keys:
            return 0
        ids = self.components.ids(np.array(keys, dtype=np.uint64))
        self.stats.restore(ids, np.array(sums, dtype=np.float64))
        return len(keys)

    def nbytes(self) -> int:
        return self.join.nbytes() + self.components.nbytes() + self.stats.nbytes()


def _route_name(subject) -> list[str]:
    return [subject.service, subject.method, subject.route]
