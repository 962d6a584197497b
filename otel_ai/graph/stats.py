"""Per-component sums per event-time slot, and what normal looks like for each component.

A short ring of recent slots per component (the "now" a localisation looks at) and an
exponentially weighted baseline (half-life as the subjects' baselines) that learns a
slot when it leaves the ring, so the last RECENT_SLOTS are never normal yet, and not
at all while ``frozen`` (set by the pipeline while incidents are open, so that a fault
never becomes the normal it is compared with).

Both are allocated for the component table's cap, and made resident, at start: learning
components then costs no memory, where doubling arrays had grown RSS by ~5 MiB in the
first slots of a 10k-route bench (and copied both arrays each time). The per-slot work
reads only the rows of components seen so far (`used`).

Every field is a weighted sum (weights are sampling's adjusted counts), so windows and
baselines add up and means and variances come out of them. Memory per component: the
ring in float32 (a slot's sums need no more) and the baseline in float64, 308 bytes;
20 MB at the ComponentTable's default cap of 65,536 components.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otel_ai.baseline import HALF_LIFE_S
from otel_ai.graph.components import MAX_COMPONENTS, ComponentTable
from otel_ai.graph.join import Observations
from otel_ai.model import Subject
from otel_ai.resources import ResourceInfo

COUNT, ERRORS, ORIGINS, TOTAL, TOTAL_SQ, SELF, SELF_SQ = range(7)
N_FIELDS = 7
RECENT_SLOTS = 9
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the ring's cells are float32


@dataclass(slots=True)
class GraphSnapshot:
    """What localisation reads: per component, sums over a recent window and the baseline,
    and the names of what the ids stand for."""

    now: np.ndarray  # (components, N_FIELDS)
    base: np.ndarray  # (components, N_FIELDS), decayed sums
    kind: np.ndarray  # per component: ROUTE, POD or EDGE (components.py)
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    subjects: list[Subject]  # SubjectTable.subjects
    services: list[str]  # SubjectTable.services
    resources: list[ResourceInfo]  # ResourceTable.resources
    window_s: float


class ComponentStats:
    def __init__(self, slot_ns: int, capacity: int = MAX_COMPONENTS):
        self.slot_ns = slot_ns
        self.decay = 0.5 ** (slot_ns / 1e9 / HALF_LIFE_S)
        self.recent = np.full((capacity, RECENT_SLOTS, N_FIELDS), 0.0, dtype=np.float32)
        self.baseline = np.full((capacity, N_FIELDS), 0.0)
        self.used = 0  # rows of the components seen so far; the rest are zero
        self.cell_slot = np.full(RECENT_SLOTS, -1, dtype=np.int64)  # the slot each ring cell holds
        self.newest_slot: int | None = None
        self.frozen = False
        self.late = 0  # observations for slots already out of the ring

    @property
    def rows(self) -> int:
        return self.recent.shape[0]

    def nbytes(self) -> int:
        return self.recent.nbytes + self.baseline.nbytes

    def _ensure(self, size: int) -> None:
        self.used = max(self.used, size)
        if size <= self.rows:
            return
        grow = max(size, 2 * self.rows, 64) - self.rows  # only past a cap the table never exceeds
        self.recent = np.concatenate((self.recent, np.zeros((grow, RECENT_SLOTS, N_FIELDS), dtype=np.float32)))
        self.baseline = np.concatenate((self.baseline, np.zeros((grow, N_FIELDS))))

    def roll_to(self, slot: int) -> None:
        """Make `slot` the newest in the ring; slots pushed out are learnt."""
        if self.newest_slot is None:
            self.newest_slot = slot
            self.cell_slot[slot % RECENT_SLOTS] = slot
            return
        gap = slot - self.newest_slot
        for step in range(1, min(gap, RECENT_SLOTS) + 1):
            entering = self.newest_slot + step
            cell = entering % RECENT_SLOTS
            if self.cell_slot[cell] >= 0:
                self._learn(cell)
            self.recent[:self.used, cell, :] = 0.0
            self.cell_slot[cell] = entering
        if gap > RECENT_SLOTS and not self.frozen:
            self.baseline[:self.used] *= self.decay ** (gap - RECENT_SLOTS)  # slots nobody saw: nothing happened
            self.cell_slot[:] = -1
            self.cell_slot[slot % RECENT_SLOTS] = slot
        self.newest_slot = max(self.newest_slot, slot)

    def _learn(self, cell: int) -> None:
        if not self.frozen:
            used = self.used
            self.baseline[:used] *= self.decay
            self.baseline[:used] += self.recent[:used, cell, :]

    def add(self, obs: Observations) -> None:
        if len(obs) == 0:
            return
        slot = obs.end_ns // self.slot_ns
        self.roll_to(int(slot.max()))
        inside = slot > self.newest_slot - RECENT_SLOTS
        self.late += int((~inside).sum())
        if not inside.any():
            return
        comp, slot = obs.component[inside], slot[inside]
        size = int(comp.max()) + 1
        self._ensure(size)
        w = obs.weight[inside].astype(np.float64)
        total, own = obs.total_ms[inside], obs.self_ms[inside]
        values = (w, w * obs.error[inside], w * obs.origin[inside], w * total, w * total * total, w * own, w * own * own)
        # An advance's observations end within a few slots: one bincount per field over
        # (slot, component) cells of just those slots.
        first = int(slot.min())
        spread = int(slot.max()) - first + 1
        cells = (slot - first) * size + comp
        sums = np.stack([np.bincount(cells, weights=v, minlength=spread * size) for v in values], axis=-1)
        for offset in range(spread):
            ring = (first + offset) % RECENT_SLOTS
            # Summed in float64 and held below float32's limit: a span of absurd length (a
            # client's uint64 timestamps) would otherwise make a cell inf, and its baseline nan.
            cell = self.recent[:size, ring, :] + sums[offset * size:(offset + 1) * size]
            self.recent[:size, ring, :] = np.minimum(cell, FLOAT32_MAX)

    def restore(self, ids: np.ndarray, sums: np.ndarray) -> None:
        """Set the baselines of components `ids` (a restart's saved state; 0 is the overflow)."""
        self._ensure(int(ids.max()) + 1)
        keep = ids > 0
        self.baseline[ids[keep]] = sums[keep]

    def window(self, last_slot: int, slots: int) -> np.ndarray:
        """(components, N_FIELDS) sums over the `slots` slots ending with last_slot."""
        cells = np.flatnonzero((self.cell_slot > last_slot - slots) & (self.cell_slot <= last_slot))
        return self.recent[:self.used, cells, :].sum(axis=1, dtype=np.float64)

    def snapshot(self, last_slot: int, slots: int, table: ComponentTable, subjects: list[Subject],
                 services: list[str], resources: list[ResourceInfo]) -> GraphSnapshot:
        kind, a, b, c = table.fields()
        size = kind.shape[0]
        self._ensure(size)
        return GraphSnapshot(self.window(last_slot, slots)[:size], self.baseline[:size].copy(), kind, a, b, c,
                             subjects, services, resources, slots * self.slot_ns / 1e9)
