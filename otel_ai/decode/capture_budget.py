"""How many of a busy subject's interesting requests become captures.

The suspect rings keep about a hundred captures per subject and kind (suspects.py), so a
route serving thousands of errors a second would build thousands of captures (every
attribute read, a Python object each) only to push them out within a second. The budget
keeps about PER_SECOND a second per subject and class (errors, slow requests, the
sampled good ones) and drops the rest before anything is read.

Which requests stay is decided by a fixed-seed hash of the trace id against the class's keep
fraction, never by arrival order: a pod whose exporter sends late, or a canary with 5 %
of the traffic, is kept in proportion to its requests, and a trace kept at one hop tends
to be kept at the others (a lower hash passes every fraction above it). Each capture's
weight is divided by the fraction, so shares over a period whose fraction changed (quiet,
then an incident) count requests, not captures. The fraction follows the class's rate in
event time, once per tick of it (a tenth of a second), so a replay gives the same captures
however fast it runs; a subject's first tick keeps everything. (Ticks of a whole second
let a busy subject's first second build every capture: 40 % of a 1M-span bench's spans
were picked that way, at startup or when a route appears.)
"""
from __future__ import annotations

import itertools

import numpy as np

PER_SECOND = 8.0  # captures a second per subject and class: a ring of 96 then spans >= 12 s
ERROR, SLOW, SAMPLED = 0, 1, 2
CLASSES = 3
TICK_NS = 100_000_000  # the fractions move once per tick of event time
MAX_GAP_TICKS = 600  # event time jumping further than this (a minute: a gap in traffic) restarts the count
# Fixed, so that a replay keeps the same captures in every run (the trace ids are the
# senders' own: a seed kept secret would not stop them choosing which traces are kept).
SEED = 0x5EED_CA97_0B5E_55ED
_MIX = np.uint64(0x9E3779B97F4A7C15)


class CaptureBudget:
    def __init__(self, per_second: float = PER_SECOND, seed: int | None = None):
        self.per_second = per_second
        self._seed = np.uint64(SEED if seed is None else seed)
        self.keep = np.ones((0, CLASSES))  # fraction kept, per subject and class
        self._seen = np.zeros((0, CLASSES), dtype=np.int64)  # candidates since the fractions were set
        self._since_tick = -1  # event tick the count started

    def thin(self, subject: np.ndarray, klass: np.ndarray, candidate: np.ndarray, trace_key: np.ndarray,
             ticks: list[int], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the candidates kept, each row's keep fraction) for one pass over the rows of
        one or more requests, counting the candidates towards the next fractions.
        sizes: the rows of each request, in order; ticks: each request's event tick (its
        median end // TICK_NS). The fractions move only between requests, so a pass over many
        requests keeps what a pass over each alone would."""
        fraction = np.ones(subject.shape[0])
        kept = candidate
        starts = list(itertools.accumulate(sizes, initial=0))
        row = 0  # the first row of the requests that share the current fractions
        for r, tick in enumerate(ticks + [None]):
            if tick is not None and (not sizes[r] or not self._moves(tick)):
                continue  # a request without rows has no event tick (its median reads 0)
            if starts[r] > row:  # one step of numpy for all the requests before r
                kept = self._apply(subject, klass, candidate, trace_key, row, starts[r], fraction, kept)
            if tick is not None:
                self._turn(tick)
            row = starts[r]
        return kept, fraction

    def _moves(self, tick: int) -> bool:
        return self._since_tick < 0 or tick > self._since_tick or self._since_tick - tick > MAX_GAP_TICKS

    def _turn(self, tick: int) -> None:
        """A request from a later event tick (or after a gap): new fractions from the count."""
        if self._since_tick < 0 or abs(tick - self._since_tick) > MAX_GAP_TICKS:
            self._seen[:] = 0
        else:
            self._set_fractions(tick - self._since_tick)
        self._since_tick = tick

    def _apply(self, subject, klass, candidate, trace_key, start: int, stop: int, fraction: np.ndarray,
               kept: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(candidate[start:stop]) + start
        if not rows.shape[0]:
            return kept
        sid, cls = subject[rows], klass[rows]
        self._count(sid, cls)
        inside = sid < self.keep.shape[0]
        if not inside.any():
            return kept
        row_fraction = np.ones(rows.shape[0])
        row_fraction[inside] = self.keep[sid[inside], cls[inside]]
        thinned = row_fraction < 1.0
        if not thinned.any():
            return kept
        fraction[rows] = row_fraction
        mixed = (trace_key[rows[thinned]] ^ self._seed) * _MIX
        uniform = (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        if kept is candidate:
            kept = candidate.copy()
        kept[rows[thinned][uniform >= row_fraction[thinned]]] = False
        return kept

    def _count(self, sid: np.ndarray, cls: np.ndarray) -> None:
        size = int(sid.max()) + 1
        if size > self._seen.shape[0]:
            grown = np.zeros((size, CLASSES), dtype=np.int64)
            grown[:self._seen.shape[0]] = self._seen
            self._seen = grown
        self._seen += np.bincount(sid * CLASSES + cls, minlength=self._seen.size).reshape(self._seen.shape)

    def _set_fractions(self, ticks: int) -> None:
        rate = self._seen / (ticks * TICK_NS / 1e9)
        keep = np.ones(self._seen.shape)
        busy = rate > self.per_second
        keep[busy] = self.per_second / rate[busy]
        self.keep = keep
        self._seen = np.zeros_like(self._seen)
