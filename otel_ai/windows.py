"""Per-subject event-time slots: named weighted counters and latency histograms.

A ring of fixed-width slots per subject (routes and dependencies today; any subject
kind with a dense id works the same). Slots from the watermark on are open and take
data; closed slots are history that the detectors sum into windows (10 s, 1 m, 5 m,
...). Which counters exist is decided by the enabled detectors (otel_ai.counters).
Every cell is a float32 sum of weights, so sampled spans and pre-aggregated metric
points add up the same way. Memory is rows x ring x (counters + bins), whatever the
span rate: the subject table's caps bound the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from otel_ai.counters import REQUESTS, SQUARED_WEIGHTS, Counter
from otel_ai.decode import SpanBatch
from otel_ai.histogram import BINS, bin_index

OPEN_SLOTS = 18  # how far ahead of the watermark a span may end and still be counted
EARLY_SLOTS = 3  # slots opened before the first data's median time


@dataclass(slots=True)
class AddResult:
    counted: int
    late: int  # ended in a slot that had already closed
    too_early: int  # ended beyond the open slots (clock far ahead)


DENSE_CELLS_PER_ROW = 8  # up to this many ring cells per batch row, _cells marks instead of sorting


class WindowStore:
    def __init__(self, slot_ns: int, history_slots: int, counters: Iterable[Counter] = (REQUESTS,),
                 max_rows: int = 1 << 30):
        self.max_rows = max_rows  # the subject table's cap: growth never exceeds it
        self.slot_ns = slot_ns
        self.history_slots = history_slots
        self.ring = history_slots + OPEN_SLOTS
        self.first_open_slot: int | None = None
        self.first_slot: int | None = None  # the oldest slot with history (start, or after a gap)
        self._capacity = 0
        by_name = {REQUESTS.name: REQUESTS, SQUARED_WEIGHTS.name: SQUARED_WEIGHTS}
        for counter in counters:
            by_name.setdefault(counter.name, counter)
        self.counters = tuple(by_name.values())
        self.values = {name: np.zeros((0, self.ring), dtype=np.float32) for name in by_name}
        self.hist = np.zeros((0, self.ring, BINS), dtype=np.float32)

    @property
    def rows(self) -> int:
        return self._capacity

    def ensure(self, size: int) -> None:
        if size <= self._capacity:
            return
        new = min(max(size, self._capacity * 2, 64), max(size, self.max_rows))
        grow = new - self._capacity
        for name, values in self.values.items():
            self.values[name] = np.concatenate((values, np.zeros((grow, self.ring), dtype=np.float32)))
        self.hist = np.concatenate((self.hist, np.zeros((grow, self.ring, BINS), dtype=np.float32)))
        self._capacity = new

    def start_at(self, event_ns: int) -> None:
        """Open the slots, a little before the first data's time (event_ns), so that its
        earlier spans (and those of the next few batches) are not late."""
        if self.first_open_slot is None:
            self.first_slot = event_ns // self.slot_ns
            self.first_open_slot = self.first_slot - EARLY_SLOTS

    def _open(self, end_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(slot of each row, rows inside the open slots, late count, too-early count)."""
        slot = end_ns // self.slot_ns
        offset = slot - self.first_open_slot
        inside = (offset >= 0) & (offset < OPEN_SLOTS)
        late = int((offset < 0).sum())
        return slot, inside, late, end_ns.shape[0] - late - int(inside.sum())

    def _cells(self, subject_id: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct ring cells the rows fall in, and each row's index among them:
        one sort per batch, shared by every counter."""
        sid = subject_id.astype(np.int64)
        self.ensure(int(sid.max()) + 1)
        key = sid * self.ring + slot % self.ring
        size = self._capacity * self.ring
        if size > DENSE_CELLS_PER_ROW * key.shape[0]:
            return np.unique(key, return_inverse=True)
        # Few cells for the batch's size: mark them in a dense table instead of sorting
        # the rows (the same answer as np.unique, in a fraction of its time).
        present = np.zeros(size, dtype=bool)
        present[key] = True
        return np.flatnonzero(present), (np.cumsum(present) - 1)[key]

    def add(self, batch: SpanBatch, counted_by_metrics: np.ndarray | None = None,
            hist: np.ndarray | None = None) -> AddResult:
        """Count a batch of rows: every counter, and the latency histogram.

        counted_by_metrics: rows (spans) whose subject's counts come from metrics; only
        spans_only counters count them. hist: per row, the (BINS,) latency counts to add
        instead of binning duration_ms (rows that stand for a metric point's histogram)."""
        n = len(batch)
        if n == 0:
            return AddResult(0, 0, 0)
        self.start_at(batch.median_end_ns)
        slot, inside, late, too_early = self._open(batch.end_ns)
        counted = int(inside.sum())
        if counted == 0:
            return AddResult(0, late, too_early)
        if counted < n:
            keep = lambda column: column[inside]  # noqa: E731 - the rows in open slots
        else:
            keep = lambda column: column  # noqa: E731 - all of them (the usual case): no copies
        cells, row_cell = self._cells(keep(batch.subject_id), keep(slot))
        spans_count = None if counted_by_metrics is None else ~keep(counted_by_metrics)
        for counter in self.counters:
            increments = counter.increments(batch)
            if increments is not None:
                increments = keep(increments)
                if spans_count is not None and not counter.spans_only:
                    increments = np.where(spans_count, increments, 0.0)
                self._scatter(counter.name, cells, row_cell, increments)
        if hist is not None:
            flat = np.zeros((cells.shape[0], BINS))
            np.add.at(flat, row_cell, keep(hist))
            self._scatter_hist(cells, flat.reshape(-1))
        else:
            weights = keep(batch.weight) if spans_count is None else np.where(spans_count, keep(batch.weight), 0.0)
            binned = row_cell * BINS + bin_index(keep(batch.duration_ms))
            self._scatter_hist(cells, np.bincount(binned, weights=weights, minlength=cells.shape[0] * BINS))
        return AddResult(counted, late, too_early)

    def add_aggregates(self, subject_id: np.ndarray, end_ns: np.ndarray, counts: dict[str, np.ndarray],
                       hist: np.ndarray | None = None) -> AddResult:
        """Count pre-aggregated data (e.g. RED metrics): per row a subject, an end time,
        an amount per named counter, and optionally a (rows, BINS) latency histogram.
        Counters no detector asked for are ignored."""
        if subject_id.shape[0] == 0:
            return AddResult(0, 0, 0)
        self.start_at(int(np.median(end_ns)))
        slot, inside, late, too_early = self._open(end_ns)
        if not inside.any():
            return AddResult(0, late, too_early)
        cells, row_cell = self._cells(subject_id[inside], slot[inside])
        for name, amounts in counts.items():
            if name in self.values:
                self._scatter(name, cells, row_cell, np.asarray(amounts, dtype=np.float64)[inside])
        if hist is not None:
            flat = np.zeros((cells.shape[0], BINS))
            np.add.at(flat, row_cell, np.asarray(hist, dtype=np.float64)[inside])
            self._scatter_hist(cells, flat.reshape(-1))
        return AddResult(int(inside.sum()), late, too_early)

    def _scatter(self, name: str, cells: np.ndarray, row_cell: np.ndarray, amounts: np.ndarray) -> None:
        # One bincount per counter over the batch's distinct cells: no np.add.at, no re-sort.
        self.values[name].reshape(-1)[cells] += np.bincount(row_cell, weights=amounts, minlength=cells.shape[0])

    def _scatter_hist(self, cells: np.ndarray, binned: np.ndarray) -> None:
        self.hist.reshape(-1, BINS)[cells] += binned.reshape(-1, BINS)

    def closable(self, watermark_ns: int) -> int:
        """How many open slots end at or before the watermark."""
        if self.first_open_slot is None or watermark_ns <= 0:
            return 0
        return max(0, watermark_ns // self.slot_ns - self.first_open_slot)

    def close_one(self) -> int:
        """Close the oldest open slot and return its number; the detectors then look at
        windows ending with it. Frees the ring cell that the next open slot will use."""
        closed = self.first_open_slot
        self.first_open_slot = closed + 1
        entering = (closed + OPEN_SLOTS) % self.ring
        for values in self.values.values():
            values[:, entering] = 0
        self.hist[:, entering, :] = 0
        return closed

    def skip_to(self, slot: int) -> None:
        """Jump over a long gap (no data for longer than the ring): all history is empty."""
        for values in self.values.values():
            values[:] = 0
        self.hist[:] = 0
        self.first_open_slot = self.first_slot = slot

    def held(self, counter: str, subject_id: int, first_slot: int, last_slot: int) -> float:
        """What a counter holds for one subject over slots first..last, as far as the ring
        still has them (open slots, and closed ones not yet reused)."""
        if self.first_open_slot is None or subject_id >= self._capacity:
            return 0.0
        lowest = self.first_open_slot - self.history_slots
        highest = self.first_open_slot + OPEN_SLOTS - 1
        slots = np.arange(max(first_slot, lowest), min(last_slot, highest) + 1)
        return float(self.values[counter][subject_id, slots % self.ring].sum(dtype=np.float64))

    def positions(self, last_slot: int, slots: int) -> np.ndarray:
        """Ring cells of the `slots` closed slots ending with last_slot (oldest first)."""
        slots = min(slots, self.history_slots)
        return np.arange(last_slot - slots + 1, last_slot + 1) % self.ring

    def slot(self, position: int, size: int) -> dict[str, np.ndarray]:
        """Every counter's values in one ring cell, for the first `size` subjects."""
        return {name: values[:size, position] for name, values in self.values.items()}


class WindowView:
    """Read-only window sums for all subjects as of one closed slot, with caching,
    handed to every detector (the one API all detectors share)."""

    def __init__(self, store: WindowStore, closed_slot: int, size: int, baselines, subjects, kinds: np.ndarray,
                 saturation=None):
        self.store = store
        self.saturation = saturation  # metrics.saturation.SaturationStore: instances' CPU and memory, or None
        self.closed_slot = closed_slot
        self.size = size
        self.baselines = baselines
        self.subjects = subjects
        self.kinds = kinds  # per subject: 0 route, 1 dependency, 2 instance (subjects.KIND_CODES)
        self.slot_s = store.slot_ns / 1e9
        self.end_ns = (closed_slot + 1) * store.slot_ns
        self.seen_slots = closed_slot - store.first_slot + 1  # closed slots with history
        self._sums: dict[tuple[str, int], np.ndarray] = {}

    def slots_for(self, seconds: float) -> int:
        return max(1, min(self.store.history_slots, int(round(seconds / self.slot_s))))

    def sum(self, counter: str, slots: int) -> np.ndarray:
        """A counter's sum per subject over the last `slots` slots (float64)."""
        key = (counter, slots)
        cached = self._sums.get(key)
        if cached is None:
            pos = self.store.positions(self.closed_slot, slots)
            cached = self._sums[key] = self.store.values[counter][: self.size, pos].sum(axis=1, dtype=np.float64)
        return cached

    def hist(self, slots: int, ids: np.ndarray) -> np.ndarray:
        pos = self.store.positions(self.closed_slot, slots)
        return self.store.hist[ids][:, pos, :].sum(axis=1, dtype=np.float64)

    def slot_ends(self, slots: int) -> np.ndarray:
        """End time (ns) of each of the last `slots` closed slots, oldest first."""
        n = self.store.positions(self.closed_slot, slots).shape[0]
        return (np.arange(self.closed_slot - n + 1, self.closed_slot + 1) + 1) * self.store.slot_ns

    def series(self, counter: str, sid: int, slots: int) -> np.ndarray:
        """One subject's per-slot values of a counter, oldest first."""
        return self.store.values[counter][sid, self.store.positions(self.closed_slot, slots)].astype(np.float64)

    def hist_series(self, sid: int, slots: int) -> np.ndarray:
        """One subject's per-slot latency histograms, oldest first."""
        return self.store.hist[sid, self.store.positions(self.closed_slot, slots), :].astype(np.float64)
