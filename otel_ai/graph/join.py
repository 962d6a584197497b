"""Joins the spans of each trace across batches and measures every span's own share.

Spans of one trace arrive in different batches, from different services, children
usually before their parents. The join keeps the recent spans of a ``SpanBatch`` as
columns and, each time the caller advances it to a cutoff (the watermark: every span
ending before it has arrived), finalises the spans that ended before the cutoff:

* **self time**: the span's duration minus the union of its children's intervals
  (clipped to the span), so parallel fan-out is not counted twice. For a CLIENT span
  whose callee is instrumented, the child is the callee's SERVER span and the self time
  is the edge overhead (the wire, queues, proxies: where a network delay shows); for an
  uninstrumented callee it is the whole call;
* **error origin**: the span failed and none of its children did;
* **callee**: for a CLIENT span, the route of the SERVER span it led to.

A finalised SERVER span counts for its route and its pod; a CLIENT span counts for its
edge once its parent (the calling route) is finalised too. Spans leave the join once
their parent is finalised, when they have none, or ``orphan_wait`` after they ended
(the parent is elsewhere: an uninstrumented or unsampled caller). Memory is capped at
``max_spans`` rows of 66 bytes whatever the traffic. Past the cap the join samples whole
traces, the way a consistent probability sampler does: it keeps the traces whose hashed
trace key has its top ``level`` bits clear (one in 2**level), and weighs what it keeps by
2**level, so the graph's counts stay estimates of all the traffic and every kept trace is
whole (dropping the oldest spans instead would leave nothing but unfinished ones at high
rates). The level comes down one step at a time when the join stays below a quarter of
the cap between two advances.

Everything is numpy over whole columns, and one lookup in C per advance: each span's
parent row from a hash table of the span keys (``row_of``; numpy's sort and searchsorted
where the extension is not built), a grouped running maximum for the interval unions. No
Python per span.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np

from otel_ai.decode import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, SpanBatch, native
from otel_ai.decode.columns import MAX_INTERNAL_DEPTH, span_keys
from otel_ai.graph.components import ComponentTable, edge_keys

MAX_SPANS = 1_000_000
MAX_LEVEL = 16  # keep at least one trace in 65,536
_SAMPLE_BITS = np.uint64(64 - MAX_LEVEL)  # a row keeps the top MAX_LEVEL bits of its trace's hash
_TRACE_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads even small trace keys
ORPHAN_WAIT_NS = 30 * 1_000_000_000
_REL_BITS = 40
_REL_LIMIT = (1 << _REL_BITS) - 1  # ns (~18 min): longer spans are clipped when their children are laid out
_GROUP_SHIFT = 41
MAX_ROWS = 1 << (63 - _GROUP_SHIFT)  # row and group numbers are packed above 40/41 bits of time


@dataclass(slots=True)
class Observations:
    """What one advance measured: one row per (finalised span, component it counts for)."""

    component: np.ndarray  # int32, ComponentTable id
    end_ns: np.ndarray  # int64, the span's end (event time)
    total_ms: np.ndarray  # float64, the span's duration
    self_ms: np.ndarray  # float64, its own share of it
    error: np.ndarray  # bool
    origin: np.ndarray  # bool: failed, and no child did
    weight: np.ndarray  # float32, adjusted count (sampling)

    def __len__(self) -> int:
        return int(self.component.shape[0])

    @staticmethod
    def concat(parts: list["Observations"]) -> "Observations":
        return Observations(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Observations)))


@dataclass(slots=True)
class _Rows:
    """The join's state: one row per span still waiting for its parent or children."""

    skey: np.ndarray  # uint64: (trace, span id)
    pkey: np.ndarray  # uint64: (trace, parent span id); 0 for a root span
    kind: np.ndarray  # int8
    subject: np.ndarray  # int32: route (SERVER) or dependency (CLIENT)
    service: np.ndarray  # int32
    resource: np.ndarray  # int32
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    error: np.ndarray  # bool
    weight: np.ndarray  # float32
    done: np.ndarray  # bool: finalised
    self_ns: np.ndarray  # int64
    origin: np.ndarray  # bool
    callee: np.ndarray  # int32: callee route of a CLIENT span, -1 if none
    sample: np.ndarray  # uint16: the top bits of its trace's hash (trace_sample_bits)

    def __len__(self) -> int:
        return int(self.skey.shape[0])

    @staticmethod
    def allocate(capacity: int) -> "_Rows":
        """Columns of `capacity` rows, written once so that their pages are resident now:
        ingestion then never faults them in (16k faults while the join first filled), and
        RSS holds the join's whole cap from the start instead of creeping up to it."""
        rows = _Rows(*(np.empty(capacity, dtype) for dtype in _ROW_DTYPES))
        for f in fields(_Rows):
            getattr(rows, f.name).fill(0)
        return rows

    def head(self, n: int) -> "_Rows":
        """The first n rows, as views: writes go to these columns."""
        return _Rows(*(getattr(self, f.name)[:n] for f in fields(_Rows)))

    def keep(self, n: int, index: np.ndarray) -> int:
        """Move the rows at index (ascending, among the first n) to the front; their count."""
        if index.shape[0] < n:
            for f in fields(_Rows):
                column = getattr(self, f.name)
                column[:index.shape[0]] = column[:n][index]
        return int(index.shape[0])

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(_Rows))


_ROW_DTYPES = (np.uint64, np.uint64, np.int8, np.int32, np.int32, np.int32, np.int64, np.int64, bool, np.float32, bool,
               np.int64, bool, np.int32, np.uint16)
ROW_BYTES = sum(np.dtype(dtype).itemsize for dtype in _ROW_DTYPES)


def trace_sample_bits(trace_key: np.ndarray) -> np.ndarray:
    """Per span, the top MAX_LEVEL bits of its trace's hash: at level L the join keeps the
    traces whose top L bits are clear, so a higher level keeps a subset of a lower one's."""
    return ((trace_key * _TRACE_MIX) >> _SAMPLE_BITS).astype(np.uint16)  # uint64 wraps: no errstate needed


def row_of(keys: np.ndarray, queries: np.ndarray, seed: int) -> np.ndarray:
    """Per query, the index of the first key equal to it, or -1 (int64): each span's parent
    row. In C when the extension is built (a hash table: a slot close at a million rows
    took 0.27 s in the sort and binary search below, 0.045 s so), else numpy."""
    found = native.find_rows(keys, queries, seed)
    if found is not None:
        return found
    order = np.argsort(keys, kind="stable")  # stable: the first of equal keys, as in C
    sorted_keys = keys[order]
    if sorted_keys.shape[0] == 0:
        return np.full(queries.shape[0], -1, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.shape[0] - 1)
    return np.where(sorted_keys[at] == queries, order[at], -1)


def sampled_in(sample: np.ndarray, level: int) -> np.ndarray:
    return sample < (1 << (MAX_LEVEL - level))


def _put_rows(rows: _Rows, at: int, batch: SpanBatch, kept: np.ndarray | None, sample: np.ndarray,
              weight_scale: float) -> int:
    """Write a batch's rows (only those at `kept`, if given) into rows from row `at` on; the
    number written."""
    def column(name: str) -> np.ndarray:
        values = getattr(batch, name)
        return values if kept is None else values[kept]

    trace_key, parent_span_id = column("trace_key"), column("parent_span_id")
    end = at + trace_key.shape[0]
    rows.skey[at:end] = span_keys(trace_key, column("span_id"))
    rows.pkey[at:end] = np.where(parent_span_id == 0, np.uint64(0), span_keys(trace_key, parent_span_id))
    for field_name, name in (("kind", "kind"), ("subject", "subject_id"), ("service", "service_id"),
                             ("resource", "resource_id"), ("start", "start_ns"), ("end", "end_ns"),
                             ("error", "error"), ("weight", "weight")):
        getattr(rows, field_name)[at:end] = column(name)
    if weight_scale != 1.0:
        rows.weight[at:end] *= np.float32(weight_scale)
    rows.done[at:end] = False
    rows.self_ns[at:end] = 0
    rows.origin[at:end] = False
    rows.callee[at:end] = -1
    rows.sample[at:end] = sample
    return end - at


def _no_observations() -> Observations:
    return Observations(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                        np.zeros(0, bool), np.zeros(0, np.float32))


class _InternalLinks:
    """INTERNAL span -> its parent, for spans whose INTERNAL parent came in another request
    (decode re-parents within a request): kept ``orphan_wait`` and at most ``limit``.

    Columns of 2 x limit allocated at start: the first `settled` rows sorted by key (what
    `through` searches), then the links that arrived since, appended in place. A slot's
    worth of per-request arrays (up to 5 MiB at bench rates), concatenated at each settle,
    had left the heap fragmented and RSS growing."""

    def __init__(self, limit: int):
        self.limit = limit
        capacity = 2 * limit
        self._keys = np.full(capacity, 0, np.uint64)
        self._parents = np.full(capacity, 0, np.uint64)
        self._seen = np.full(capacity, 0, np.int64)  # when each came: its batch's end, or the join's last cutoff
        self.settled = 0
        self._end = 0
        self._oldest_ns = 0  # the last settle's: a full buffer settles again with it
        self.lost = 0  # links that found no room even after settling (more than `limit` in one go)

    def __len__(self) -> int:
        return self._end

    def nbytes(self) -> int:
        return self._keys.nbytes + self._parents.nbytes + self._seen.nbytes

    @property
    def keys(self) -> np.ndarray:
        return self._keys[:self.settled]

    @property
    def parents(self) -> np.ndarray:
        return self._parents[:self.settled]

    def add(self, batch: SpanBatch, now_ns: int, level: int = 0) -> None:
        internal = batch.internal
        if internal is None or len(internal) == 0:
            return
        trace_key, span_id, parent_span_id = internal.trace_key, internal.span_id, internal.parent_span_id
        if level:  # the join holds no span of the other traces
            kept = sampled_in(trace_sample_bits(trace_key), level)
            trace_key, span_id, parent_span_id = trace_key[kept], span_id[kept], parent_span_id[kept]
        if self._end + trace_key.shape[0] > self._keys.shape[0]:
            self.settle(self._oldest_ns)
        n = min(trace_key.shape[0], self._keys.shape[0] - self._end)
        self.lost += trace_key.shape[0] - n
        trace_key, span_id, parent_span_id = trace_key[:n], span_id[:n], parent_span_id[:n]
        at, end = self._end, self._end + n
        parents = span_keys(trace_key, parent_span_id)
        parents[parent_span_id == 0] = 0
        self._keys[at:end] = span_keys(trace_key, span_id)
        self._parents[at:end] = parents
        self._seen[at:end] = max(now_ns, batch.max_end_ns)
        self._end = end

    def settle(self, oldest_ns: int) -> None:
        """Take in what arrived, drop links older than oldest_ns, keep the newest `limit`."""
        self._oldest_ns = oldest_ns
        end = self._end
        seen = self._seen[:end]
        keep = seen >= oldest_ns
        if np.count_nonzero(keep) > self.limit:
            keep &= seen >= np.sort(seen[keep])[-self.limit]
        kept = np.flatnonzero(keep)
        kept = kept[np.argsort(self._keys[kept], kind="stable")]
        n = kept.shape[0]
        for column in (self._keys, self._parents, self._seen):
            column[:n] = column[kept]  # the right side is a copy: no overlap
        self.settled = self._end = n

    def through(self, pkey: np.ndarray) -> np.ndarray:
        """Each parent key that is an INTERNAL span's, replaced by that span's parent (nested ones too)."""
        keys, parents = self.keys, self.parents
        if keys.shape[0] == 0:
            return pkey
        for _ in range(MAX_INTERNAL_DEPTH):
            at = np.minimum(np.searchsorted(keys, pkey), keys.shape[0] - 1)
            hit = (pkey != 0) & (keys[at] == pkey)
            if not hit.any():
                break
            pkey = np.where(hit, parents[at], pkey)
        return pkey


class TraceJoin:
    """Not thread-safe: the pipeline's worker owns it.

    The rows live in columns of ``max_spans`` allocated and made resident once, at start, and
    written in place (the first n rows are the held spans), so a busy join neither allocates
    nor faults in pages for its state, and its memory (ROW_BYTES x max_spans: 63 MiB at the
    default cap) is the same from the start."""

    def __init__(self, components: ComponentTable, max_spans: int = MAX_SPANS, orphan_wait_ns: int = ORPHAN_WAIT_NS):
        self.components = components
        self.max_spans = min(max_spans, MAX_ROWS)
        self.orphan_wait_ns = orphan_wait_ns
        self._store = _Rows.allocate(self.max_spans)
        self._n = 0
        self.level = 0  # the join keeps one trace in 2**level (trace_sample_bits)
        self._peak = 0  # most rows held since the last advance: whether the level can come down
        self.sampled_out = 0  # spans of traces the level left out (their kept peers weigh for them)
        self.dropped = 0  # spans lost unjoined: past the cap even at MAX_LEVEL
        self.orphans = 0  # spans whose parent never came (counted with an unknown caller)
        self.internal = _InternalLinks(max(1, self.max_spans // 8))
        self._cutoff_ns = 0
        self._seed = int.from_bytes(os.urandom(8), "little") | 1  # the parent lookup's hash: ids are untrusted

    def __len__(self) -> int:
        return self._n

    @property
    def _rows(self) -> _Rows:
        return self._store.head(self._n)

    def nbytes(self) -> int:
        return self._store.nbytes() + self.internal.nbytes()

    def add(self, batch: SpanBatch) -> None:
        """Hold a batch's spans of the traces the level keeps, until advance() joins them."""
        self.internal.add(batch, self._cutoff_ns, self.level)
        if len(batch) == 0:
            return
        sample = trace_sample_bits(batch.trace_key)
        if self._n + len(batch) > self.max_spans:
            self._raise_level(sample)
        kept = None
        if self.level:
            kept = np.flatnonzero(sampled_in(sample, self.level))
            self.sampled_out += len(batch) - kept.shape[0]
            sample = sample[kept]
        room = self.max_spans - self._n
        if sample.shape[0] > room:  # even one trace in 65,536 does not fit: the rest is lost
            self.dropped += sample.shape[0] - room
            kept = (np.arange(len(batch)) if kept is None else kept)[:room]
            sample = sample[:room]
        # each kept trace stands for 2**level
        self._n += _put_rows(self._store, self._n, batch, kept, sample, float(1 << self.level))
        self._peak = max(self._peak, self._n)

    def _raise_level(self, arriving: np.ndarray) -> None:
        """Past the cap: the lowest level that brings the held and arriving rows to 3/4 of it
        (room for the next batches); the rows of the traces it leaves out go, the others
        weigh more."""
        held = self._store.sample[:self._n]
        target = self.max_spans * 3 // 4
        level = self.level
        while level < MAX_LEVEL and (np.count_nonzero(sampled_in(held, level)) +
                                     np.count_nonzero(sampled_in(arriving, level))) > target:
            level += 1
        if level == self.level:
            return
        before = self._n
        self._n = self._store.keep(self._n, np.flatnonzero(sampled_in(held, level)))
        self.sampled_out += before - self._n
        self._store.weight[:self._n] *= np.float32(1 << (level - self.level))
        self.level = level

    def advance(self, cutoff_ns: int) -> Observations:
        """Finalise every span that ended before cutoff_ns; return what they measured."""
        self._cutoff_ns = max(self._cutoff_ns, cutoff_ns)
        self.internal.settle(cutoff_ns - self.orphan_wait_ns)
        rows = self._rows
        n = len(rows)
        if n == 0:
            self._lower_level()
            return _no_observations()
        parent_at = row_of(rows.skey, rows.pkey, self._seed)
        has_parent = (rows.pkey != 0) & (parent_at >= 0)
        unfound = np.flatnonzero(~has_parent & (rows.pkey != 0))
        if unfound.shape[0] and self.internal.keys.shape[0]:
            # a call under an INTERNAL span sent in another request: its parent is that span's
            through = self.internal.through(rows.pkey[unfound])
            moved = unfound[through != rows.pkey[unfound]]
            rows.pkey[unfound] = through
            if moved.shape[0]:
                parent_at[moved] = row_of(rows.skey, rows.pkey[moved], self._seed)
                has_parent[moved] = (rows.pkey[moved] != 0) & (parent_at[moved] >= 0)
        parent = np.where(has_parent, parent_at, 0)
        ready = np.flatnonzero(~rows.done & (rows.end < cutoff_ns))
        out = []
        if ready.shape[0]:
            self._finalise(rows, ready, parent, has_parent)
            out.append(self._server_observations(rows, ready))
        parent_done = has_parent & rows.done[parent]
        expired = rows.end < cutoff_ns - self.orphan_wait_ns
        release = rows.done & (parent_done | (rows.pkey == 0) | expired)
        self.orphans += int((release & ~parent_done & (rows.pkey != 0)).sum())
        out.append(self._edge_observations(rows, np.flatnonzero(release & (rows.kind == SPAN_KIND_CLIENT)), parent,
                                           parent_done))
        self._n = self._store.keep(n, np.flatnonzero(~release))
        self._lower_level()
        return Observations.concat(out)

    def _lower_level(self) -> None:
        """One step down when the join held under a quarter of the cap since the last advance:
        twice as many traces would have fit."""
        if self.level and self._peak < self.max_spans // 4:
            self.level -= 1
        self._peak = self._n

    @staticmethod
    def _finalise(rows: _Rows, ready: np.ndarray, parent: np.ndarray, has_parent: np.ndarray) -> None:
        n = len(rows)
        is_ready = np.zeros(n, dtype=bool)
        is_ready[ready] = True
        child = np.flatnonzero(has_parent & is_ready[parent])
        covered = np.zeros(n, dtype=np.int64)
        child_failed = np.zeros(n, dtype=bool)
        callee = np.full(n, -1, dtype=np.int32)
        if child.shape[0]:
            up = parent[child]
            p_start = rows.start[up]
            limit = np.minimum(rows.end[up] - p_start, _REL_LIMIT)
            c_start = np.clip(rows.start[child] - p_start, 0, limit)
            c_end = np.clip(rows.end[child] - p_start, 0, limit)
            # one sort on (parent row, child start): rows < 2**22 and starts < 2**40 fit an int64
            order = np.argsort((up.astype(np.int64) << _REL_BITS) | c_start)
            up, child, c_start, c_end = up[order], child[order], c_start[order], c_end[order]
            first = np.ones(up.shape[0], dtype=bool)
            first[1:] = up[1:] != up[:-1]
            group = np.cumsum(first) - 1
            # Union of intervals per parent: a running maximum of the ends so far, made
            # per group by lifting each group above the previous one.
            lift = group.astype(np.int64) << _GROUP_SHIFT
            reach = np.maximum.accumulate(lift + c_end)
            before = np.empty_like(reach)
            before[0] = lift[0]
            before[1:] = reach[:-1]
            before[first] = lift[first]
            piece = np.maximum(c_end - np.maximum(c_start, before - lift), 0)
            parents = up[first]
            covered[parents] = np.bincount(group, weights=piece).astype(np.int64)
            child_failed[parents] = np.bincount(group, weights=rows.error[child]) > 0
            served = rows.kind[child] == SPAN_KIND_SERVER
            callee[up[served]] = rows.subject[child[served]]
        rows.self_ns[ready] = rows.end[ready] - rows.start[ready] - covered[ready]
        rows.origin[ready] = rows.error[ready] & ~child_failed[ready]
        rows.callee[ready] = callee[ready]
        rows.done[ready] = True

    def _server_observations(self, rows: _Rows, ready: np.ndarray) -> Observations:
        server = ready[rows.kind[ready] == SPAN_KIND_SERVER]
        ids = np.concatenate((self.components.route_ids(rows.subject[server]),
                              self.components.pod_ids(rows.resource[server])))
        return self._observations(rows, np.concatenate((server, server)), ids)

    def _edge_observations(self, rows: _Rows, client: np.ndarray, parent: np.ndarray, parent_done: np.ndarray) -> Observations:
        up = parent[client]
        from_route = parent_done[client] & (rows.kind[up] == SPAN_KIND_SERVER)
        caller = np.where(from_route, rows.subject[up], -1)
        keys = edge_keys(caller, rows.service[client], rows.subject[client], rows.callee[client])
        return self._observations(rows, client, self.components.ids(keys))

    @staticmethod
    def _observations(rows: _Rows, index: np.ndarray, ids: np.ndarray) -> Observations:
        return Observations(
            component=ids, end_ns=rows.end[index],
            total_ms=(rows.end[index] - rows.start[index]) / 1e6, self_ms=rows.self_ns[index] / 1e6,
            error=rows.error[index], origin=rows.origin[index], weight=rows.weight[index],
        )
