"""Cumulative -> delta, per stream, with reset detection and bounded state.

OTel SDKs export histograms cumulatively by default: every point repeats everything
since the stream's start. Detection needs the requests of each interval, so each
cumulative stream keeps its previous count and latency bins, and a point becomes the
difference. Delta points pass through untouched.

Resets never become spikes:
- A process restart gives its streams a new start time, and the start time is part
  of the stream's identity (RedPoints.stream), so a restarted process is a new stream.
  Two processes that share every resource attribute (workers without
  service.instance.id) likewise stay two streams instead of one that zigzags.
- A stream's first point only counts when its start is recent (`fresh_start_ns`):
  then it holds one interval of new traffic. An old start means otel-ai simply had
  not seen the stream before (its own restart, or an expired stream): that point is
  only the base for the next one, never hours of requests landing in one slot.
- A count that goes down without a new start time (a reset the sender did not
  announce) counts as a reset: the new value is what arrived since. Only the count
  decides: an exponential histogram that downscales moves mass between re-binned
  bins, so single bins may shrink while the stream only grew; the bins' difference is
  clipped at zero and scaled to the count's.
- Points at or before the stream's last time (replays, duplicates) are dropped.

State is one row of numpy arrays per stream, capped at `max_streams`; streams idle for
`idle_ns` of event time expire, and when the table is full the least recently seen
sixteenth is evicted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otel_ai.histogram import BINS
from otel_ai.metrics.points import RedPoints

_NEVER = np.iinfo(np.int64).min

@dataclass(slots=True)
class DeltaStats:
    first_points: int = 0  # points that only set a new stream's base
    resets: int = 0  # values that went down without a new start
    stale: int = 0  # points at or before their stream's last time
    expired: int = 0
    evicted: int = 0  # streams dropped because the table was full


class DeltaConverter:
    """Not thread-safe: the caller serialises (like the decoders)."""

    def __init__(self, max_streams: int = 100_000, idle_ns: int = 15 * 60 * 10**9,
                 fresh_start_ns: int = 5 * 60 * 10**9) -> None:
        self.max_streams = max_streams
        self.idle_ns = idle_ns
        self.fresh_start_ns = fresh_start_ns
        self.stats = DeltaStats()
        self._rows: dict[int, int] = {}
        self._free: list[int] = []
        self._capacity = 0
        self._key = np.zeros(0, dtype=np.uint64)
        self._last_ns = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0)
        self._hist = np.zeros((0, BINS))
        self._swept_ns = 0

    def __len__(self) -> int:
        return len(self._rows)

    def state_bytes(self) -> int:
        """Bytes held in the per-stream arrays (the dict of keys comes on top)."""
        return self._key.nbytes + self._last_ns.nbytes + self._count.nbytes + self._hist.nbytes

    def to_delta(self, points: RedPoints) -> RedPoints:
        """The requests each point adds since its stream's previous point."""
        if len(points) == 0:
            return points
        keep = ~points.cumulative
        count = points.count.copy()
        hist = points.hist.copy()
        start = points.start_ns.copy()
        exemplar_since = np.zeros(len(points), dtype=np.int64)
        cumulative = np.flatnonzero(points.cumulative)
        if cumulative.shape[0]:
            # The median: one point with a wild timestamp must not expire every stream.
            self._expire(int(np.median(points.end_ns[cumulative])))
            # Oldest first per stream, one occurrence per round, so a request that carries
            # several exports of one stream is applied in order.
            order = cumulative[np.lexsort((points.end_ns[cumulative], points.stream[cumulative]))]
            keys = points.stream[order]
            first = np.r_[True, keys[1:] != keys[:-1]]
            rank = np.arange(order.shape[0]) - np.maximum.accumulate(np.where(first, np.arange(order.shape[0]), 0))
            # Chunks of at most half the table: eviction always finds room among the rest.
            chunk = max(1, self.max_streams // 2)
            for r in range(int(rank.max()) + 1):
                in_round = order[rank == r]
                for offset in range(0, in_round.shape[0], chunk):
                    rows = in_round[offset:offset + chunk]
                    emitted = self._apply(points, rows, count, hist, start, exemplar_since)
                    keep[rows[emitted]] = True
        out_rows = np.flatnonzero(keep)
        exemplars = [e for e in points.exemplars if e.time_ns > exemplar_since[e.row]]
        delta = points.take(out_rows, exemplars)
        delta.count, delta.hist, delta.start_ns = count[out_rows], hist[out_rows], start[out_rows]
        delta.cumulative = np.zeros(out_rows.shape[0], dtype=bool)
        return delta

    def _apply(self, points: RedPoints, rows: np.ndarray, count: np.ndarray, hist: np.ndarray,
               start: np.ndarray, exemplar_since: np.ndarray) -> np.ndarray:
        """Turns `rows` (distinct streams) into deltas in place; returns which to emit."""
        state, known = self._state_rows(points.stream[rows])
        end = points.end_ns[rows]
        new_count, new_hist = points.count[rows], points.hist[rows]
        prev_end, prev_count, prev_hist = self._last_ns[state], self._count[state], self._hist[state]
        stale = known & (end <= prev_end)
        went_down = known & ~stale & (new_count < prev_count)
        continues = known & ~stale & ~went_down
        fresh = ~known & (points.start_ns[rows] > 0) & (end - points.start_ns[rows] <= self.fresh_start_ns)
        self.stats.stale += int(stale.sum())
        self.stats.resets += int(went_down.sum())
        self.stats.first_points += int((~known & ~fresh).sum())

        added = new_count - prev_count
        grown = np.maximum(new_hist - prev_hist, 0.0)
        grown_total = grown.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            grown *= np.where(grown_total > 0, added / grown_total, 0.0)[:, None]
        count[rows] = np.where(continues, added, new_count)
        hist[rows] = np.where(continues[:, None], grown, new_hist)
        start[rows] = np.where(known, prev_end, start[rows])
        exemplar_since[rows] = np.where(known, prev_end, 0)
        update = ~stale
        self._last_ns[state[update]] = end[update]
        self._count[state[update]] = new_count[update]
        self._hist[state[update]] = new_hist[update]
        return continues | went_down | fresh

    def _state_rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key's state row, allocating rows for new streams; and which were known."""
        found = [self._rows.get(key, -1) for key in keys.tolist()]
        state = np.array(found, dtype=np.intp)
        known = state >= 0
        missing = np.flatnonzero(~known)
        if missing.shape[0]:
            taken = missing.shape[0]
            self._make_room(taken, in_use=state[known])
            rows = self._free[-taken:]
            del self._free[-taken:]
            new_keys = keys[missing]
            self._rows.update(zip(new_keys.tolist(), rows))
            rows = np.array(rows, dtype=np.intp)
            self._key[rows] = new_keys
            self._last_ns[rows] = _NEVER
            state[missing] = rows
        return state, known

    def _make_room(self, needed: int, in_use: np.ndarray) -> None:
        if len(self._free) >= needed:
            return
        if self._capacity < self.max_streams:
            self._grow(min(self.max_streams, max(self._capacity * 2, len(self._rows) + needed, 1024)))
        if len(self._free) >= needed:
            return
        # Full: evict the least recently seen sixteenth (at least what is needed), never
        # a stream of the points being converted.
        used = np.array(list(self._rows.values()), dtype=np.intp)
        used = used[~np.isin(used, in_use)]
        evict = min(used.shape[0], max(needed - len(self._free), self.max_streams // 16, 1))
        victims = used[np.argpartition(self._last_ns[used], evict - 1)[:evict]] if evict else used[:0]
        self._release(victims)
        self.stats.evicted += int(victims.shape[0])

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        self._key = np.concatenate((self._key, np.zeros(extra, dtype=np.uint64)))
        self._last_ns = np.concatenate((self._last_ns, np.zeros(extra, dtype=np.int64)))
        self._count = np.concatenate((self._count, np.zeros(extra)))
        self._hist = np.concatenate((self._hist, np.zeros((extra, BINS))))
        self._free.extend(range(capacity - 1, self._capacity - 1, -1))
        self._capacity = capacity

    def _release(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            del self._rows[int(self._key[row])]
            self._free.append(row)

    def _expire(self, now_ns: int) -> None:
        """Forget streams idle for idle_ns of event time (checked at most every idle_ns / 8)."""
        if now_ns - self._swept_ns < self.idle_ns // 8 or not self._rows:
            return
        self._swept_ns = now_ns
        used = np.array(list(self._rows.values()), dtype=np.intp)
        idle = used[self._last_ns[used] < now_ns - self.idle_ns]
        self._release(idle)
        self.stats.expired += int(idle.shape[0])
