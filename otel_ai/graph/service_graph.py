"""The service graph stage: the join, the component table and their stats, behind the two
calls the pipeline makes.

    graph.add(batch)              per decoded SpanBatch (cheap: queues columns)
    graph.close_slot(slot)        per closed window slot, after the windows' own close:
                                  joins every span that ended in it or before, and adds
                                  what they measured to the component stats
    graph.snapshot(slot, slots)   when localising: now (the last `slots`) vs the baseline

Memory is capped by three numbers: ``max_spans`` join rows (64 bytes each),
``max_components`` components (~430 bytes each in stats and table), nothing per trace
or per request beyond the join rows: 61 MiB + 27 MiB at the defaults.
"""
from __future__ import annotations

from otel_ai.decode import SpanBatch
from otel_ai.graph.components import MAX_COMPONENTS, ComponentTable
from otel_ai.graph.join import MAX_SPANS, ORPHAN_WAIT_NS, Observations, TraceJoin
from otel_ai.graph.stats import ComponentStats, GraphSnapshot
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
        self.stats = ComponentStats(slot_ns)

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

    def nbytes(self) -> int:
        return self.join.nbytes() + self.components.nbytes() + self.stats.nbytes()
