"""Suspect captures: which spans are kept with their attributes, and how pairs are interned.

Selection is numpy over the batch's columns, the same for every reader: all errors, the
slow requests, a deterministic 1-in-SAMPLE_ONE_IN trace sample, capped per subject, and
the first request per subject that a capture counter of an enabled detector marks (a
429, a 401/403, a retried call).
Only the chosen rows are read again for attributes and exceptions (a `DetailsReader`
supplied by the reader), so the cost does not grow with the batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from otel_ai.analysis.redact import PSEUDONYMIZED_KEYS, pseudonym
from otel_ai.decode.capture_budget import ERROR, SAMPLED, SLOW, TICK_NS, CaptureBudget
from otel_ai.decode.child_index import ChildIndex
from otel_ai.decode.columns import ReadResult
from otel_ai.decode.contract import SPAN_KIND_CLIENT, Capture, SpanBatch

SAMPLE_ONE_IN = 32  # good requests sampled for suspects, by trace id, so whole traces agree
# Captures are costly (every attribute is read); during an incident most spans are errors,
# so cap them per subject and batch to keep ingestion as fast as on a quiet day.
MAX_CAPTURES_PER_SUBJECT = 8

# Never suspects: they identify the subject, describe the outcome itself, or are
# unique per request.
NOT_SUSPECT_KEYS = frozenset({
    "http.route", "http.request.method", "http.method", "rpc.service", "rpc.method", "rpc.system",
    "http.response.status_code", "http.status_code", "rpc.grpc.status_code", "error.type",
    "otel.status_code", "otel.status_description", "otel.scope.name",
    "url.full", "url.path", "url.query", "http.url", "http.target", "client.port", "net.peer.ip", "net.peer.port",
    "net.sock.peer.addr", "net.sock.peer.port", "network.peer.address", "network.peer.port",
    "server.port", "net.host.port", "db.statement", "db.query.text", "code.lineno", "thread.id",
    "thread.name", "process.pid", "process.command_line", "process.command_args",
    "process.executable.path", "http.request.body.size", "http.response.body.size",
    "http.request_content_length", "http.response_content_length", "telemetry.sdk.name",
    "telemetry.sdk.version", "telemetry.sdk.language", "telemetry.auto.version",
    "process.runtime.version", "process.runtime.description", "exception.stacktrace", "http.request.resend_count",
})
# Who sent the request: suspects of rate limits and auth failures. Thousands of values
# are normal, so they skip the per-key cap (the capture rings bound them), and old
# semantic-convention names are read as the new ones. Addresses and user ids are kept
# only as pseudonyms.
CLIENT_KEYS = {
    "client.address": "client.address", "http.client_ip": "client.address",
    "user_agent.original": "user_agent.original", "http.user_agent": "user_agent.original",
    "enduser.id": "enduser.id",
}
MAX_CLIENT_PAIRS = 50_000
MAX_VALUE_CHARS = 128
MAX_MESSAGE_CHARS = 200
MAX_EXCEPTIONS = 4
MAX_VALUES_PER_KEY = 256  # more distinct values than this: the key is high-cardinality
MAX_KEYS = 512


# A reader's second look at chosen rows: (batch row indices, want pairs per row, want
# exceptions per row) -> one (trace_id, span_id, pairs, exceptions) tuple per row, where pairs are the
# interned span attribute pairs sorted by key and exceptions ((type, message), ...); each
# is () unless asked for.
DetailsReader = Callable[[np.ndarray, np.ndarray, np.ndarray], list[tuple]]


class PairInterner:
    """Bounded interning of (key, value) pairs, refusing high-cardinality keys.

    Interning keeps memory per captured request to one tuple of shared references;
    the per-key value cap is what keeps request ids and the like out."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self._values_per_key: dict[str, int] = {}
        self.high_cardinality: set[str] = set()
        self._clients: dict[tuple[str, str], tuple[str, str]] = {}

    def intern(self, key: str, value: str) -> tuple[str, str] | None:
        client_key = CLIENT_KEYS.get(key)
        if client_key is not None:
            return self._client(client_key, value) if value else None
        pair = (key, value)
        found = self._pairs.get(pair)
        if found is not None:
            return found
        if key in self.high_cardinality:
            return None
        count = self._values_per_key.get(key, 0)
        if count >= MAX_VALUES_PER_KEY:
            self.high_cardinality.add(key)
            return None
        if count == 0 and len(self._values_per_key) >= MAX_KEYS:
            return None
        self._values_per_key[key] = count + 1
        self._pairs[pair] = pair
        return pair

    def _client(self, key: str, value: str) -> tuple[str, str]:
        """A client attribute's shared pair, pseudonymized where it names a person or an
        address; cleared when full, so it stays bounded."""
        pair = self._clients.get((key, value))
        if pair is None:
            if len(self._clients) >= MAX_CLIENT_PAIRS:
                self._clients.clear()
            pair = self._clients[(key, value)] = (key, pseudonym(value) if key in PSEUDONYMIZED_KEYS else value)
        return pair

    def refuses_key(self, key: str) -> bool:
        """True once every new value of the key will be refused (a native cache may skip it).
        Both reasons are permanent: counts only grow."""
        return key in self.high_cardinality or (key not in self._values_per_key and len(self._values_per_key) >= MAX_KEYS)


def value_text(kind: str | None, string: str, number: int, flag: bool) -> str | None:
    """The suspect value of an AnyValue (kind: the oneof's field name), or None for doubles,
    arrays, maps and bytes, which are never useful suspects."""
    if string:
        return string[:MAX_VALUE_CHARS]
    if kind == "int_value":
        return str(number)
    if kind == "bool_value":
        return "true" if flag else "false"
    if kind == "string_value":
        return ""
    return None


def first_per_group(mask: np.ndarray, group: np.ndarray, limit: int) -> np.ndarray:
    """mask, keeping at most `limit` True entries per group value (the earliest ones)."""
    idx = np.flatnonzero(mask)
    n = idx.shape[0]
    if n <= limit:
        return mask
    order = np.argsort(group[idx], kind="stable")
    sorted_groups = group[idx][order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=first[1:])
    position = np.arange(n)
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    limited = np.zeros_like(mask)
    limited[idx[order[rank < limit]]] = True
    return limited


class SharedTuples:
    """One object for equal tuples (a capture's pairs, its exceptions), cleared when full so
    it stays bounded. Captures of one subject mostly repeat both: 46,351 captures held
    2,851 distinct pairs tuples and 4 distinct exceptions (bench traffic over 10k routes), and
    each copy cost ~200 bytes of pairs and ~350 of exception text."""

    def __init__(self, max_entries: int = 65_536):
        self.max_entries = max_entries
        self._tuples: dict[tuple, tuple] = {}

    def of(self, value: tuple) -> tuple:
        if not value:
            return ()
        found = self._tuples.get(value)
        if found is None:
            if len(self._tuples) >= self.max_entries:
                self._tuples.clear()
            found = self._tuples[value] = value
        return found


class ServerPairs:
    """A resource's suspect pairs without service.name (a route's service is its subject),
    per ResourceInfo, so a server capture does not rebuild them."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._pairs: dict[int, tuple] = {}

    def of(self, info) -> tuple:
        found = self._pairs.get(id(info))
        if found is None or found[0] is not info:
            if len(self._pairs) >= self.max_entries:
                self._pairs.clear()
            found = self._pairs[id(info)] = (info, tuple(p for p in info.pairs if p[0] != "service.name"))
        return found[1]


def add_captures(reads: list[ReadResult], slow_threshold_ms: np.ndarray, subject_names: list, children: ChildIndex,
                 intern: Callable[[str, str], tuple | None], server_pairs: ServerPairs, capture_marks: tuple = (),
                 budget: CaptureBudget | None = None, merged: SpanBatch | None = None,
                 shared: SharedTuples | None = None) -> None:
    """Pick the rows suspects need from each read request and append their Captures to its
    batch, exactly as if each request were picked alone (the caps are per subject and
    request), but with one pass of numpy over all of them: the pipeline's worker picks a
    merged batch's requests at once.
    capture_marks: the counters (otel_ai.counters) whose rows the enabled detectors want
    captured as their bad requests; each request's own rows are taken (Counter.rows).
    budget: thins busy subjects' captures (capture_budget.py); every interesting CLIENT
    span still goes into the child index.
    merged: the reads' batches already merged in order (the worker's merge), whose columns
    and capture counters' rows then serve instead of joining the batches' again.
    shared: makes equal pairs and exceptions of the captures one object each."""
    share = shared.of if shared is not None else (lambda value: value)
    if not reads:
        return
    batches = [read.batch for read in reads]

    def joined(column: str) -> np.ndarray:
        return getattr(merged, column) if merged is not None else _joined([getattr(b, column) for b in batches])

    def counter_rows(counter) -> np.ndarray:
        return counter.rows(merged) if merged is not None else _joined([counter.rows(b) for b in batches])

    sid, duration_ms, error = joined("subject_id"), joined("duration_ms"), joined("error")
    sizes = [len(b) for b in batches]
    request = np.repeat(np.arange(len(reads), dtype=np.int64), sizes)
    # (request, subject) as one key: the caps below are per subject and request
    group = (request << 32) | sid.astype(np.int64)
    inside = sid < slow_threshold_ms.shape[0]
    slow_thr = np.full(sid.shape[0], np.inf)
    slow_thr[inside] = slow_threshold_ms[sid[inside]]
    sampled = _joined([read.sample_byte for read in reads]) < (256 // SAMPLE_ONE_IN)
    slow = (duration_ms > slow_thr) & ~error
    interesting = error | slow | sampled
    marks = [(counter, rows) for counter in capture_marks if (rows := counter_rows(counter)).any()]
    alone = [rows for counter, rows in marks if counter.capture_alone]
    only_marked = np.logical_or.reduce(alone) & ~interesting if alone else None
    if not interesting.any() and (only_marked is None or not only_marked.any()):
        return
    is_client = joined("kind") == SPAN_KIND_CLIENT
    candidate, fraction = interesting, None
    if budget is not None:
        klass = np.where(error, ERROR, np.where(slow, SLOW, SAMPLED))
        candidate, fraction = budget.thin(sid, klass, interesting, joined("trace_key"),
                                       [b.median_end_ns // TICK_NS for b in batches], sizes)
    chosen = first_per_group(candidate, group, MAX_CAPTURES_PER_SUBJECT)
    marked_idx = np.flatnonzero(only_marked) if only_marked is not None else np.zeros(0, dtype=np.int64)
    if marked_idx.shape[0]:
        # Requests picked only by a mark: the first per subject and request, on top of the
        # usual cap, so they never crowd out the errors and the sample.
        _, first = np.unique(group[marked_idx], return_index=True)
        chosen = chosen.copy()
        chosen[marked_idx[first]] = True
    # Every interesting CLIENT span goes into the child index (cheap), so the requests
    # that called it can name it; only the capped few are read with all attributes. (A
    # call picked only by a mark, neither failed nor slow, names nothing there.)
    client = (interesting if only_marked is None else interesting | chosen) & is_client
    wanted = np.flatnonzero(client | (chosen & ~is_client))
    # Per request, its CLIENT rows first (they name the calls its requests made), then the rest.
    wanted = wanted[np.argsort(request[wanted] * 2 + ~client[wanted], kind="stable")]
    # Only captures and failed calls (their exceptions) are read again; any other call
    # goes into the child index from the columns alone.
    read_again = np.flatnonzero(chosen[wanted] | (client[wanted] & error[wanted]))
    found = [_NOT_READ] * wanted.shape[0]
    for k, details in zip(read_again.tolist(),
                          _details(reads, sizes, request[wanted[read_again]], wanted[read_again], chosen, error)):
        found[k] = details
    offsets = np.cumsum([0] + [len(read.blocks) for read in reads])
    blocks = [info for read in reads for info in read.blocks]
    block = _joined([read.block for read in reads]) + np.repeat(offsets[:-1], sizes)
    # Python lists of the few wanted rows: no numpy scalar per field per capture.
    weight = joined("weight")[wanted] if fraction is None else joined("weight")[wanted] / fraction[wanted]
    columns = zip(request[wanted].tolist(), client[wanted].tolist(), sid[wanted].tolist(),
                  joined("trace_key")[wanted].tolist(), joined("end_ns")[wanted].tolist(),
                  duration_ms[wanted].tolist(), error[wanted].tolist(), slow[wanted].tolist(), sampled[wanted].tolist(),
                  chosen[wanted].tolist(), block[wanted].tolist(), weight.tolist(), found,
                  _marks_of(marks, wanted),
                  interesting[wanted].tolist() if only_marked is not None else [True] * wanted.shape[0])
    for (req, is_call, subject, trace_key, end, dur, err, is_slow, is_sampled, is_chosen, block_of, weight, details,
         marked, usual) in columns:
        trace_id, span_id, pairs, exceptions = details
        info = blocks[block_of]
        captures = batches[req].captures
        if is_call:
            if usual:
                children.add(trace_key, info.service, subject_names[subject].service, err, dur, share(exceptions),
                             end)
            if is_chosen:
                captures.append(Capture(subject, end, dur, err, is_slow, is_sampled, trace_id, share(info.pairs + pairs),
                                        share(exceptions), span_id, marked, weight))
            continue
        extra = []
        child_exceptions = []
        slowest = None
        for dep, child_err, child_ms, child_exc in children.get(trace_key, info.service, end - int(dur * 1e6), end):
            if child_err:
                extra.append(("dependency.failed", dep))
                child_exceptions.extend(child_exc)
            if child_ms >= 0.5 * dur and (slowest is None or child_ms > slowest[1]):
                slowest = (dep, child_ms)
        if slowest is not None:
            extra.append(("dependency.slow", slowest[0]))
        out = server_pairs.of(info) + pairs
        if extra:
            added = list(out)
            for key, value in extra:
                pair = intern(key, value)
                if pair is not None and pair not in added:
                    added.append(pair)
            out = tuple(added)
        captures.append(Capture(subject, end, dur, err, is_slow, is_sampled, trace_id, share(out),
                                share(exceptions + tuple(child_exceptions)) if err else (), span_id, marked, weight))


_NOT_READ = (b"", b"", (), ())  # trace id, span id, pairs, exceptions of a call not read again


def _joined(columns: list[np.ndarray]) -> np.ndarray:
    return columns[0] if len(columns) == 1 else np.concatenate(columns)


def _details(reads: list[ReadResult], sizes: list[int], request: np.ndarray, rows: np.ndarray, chosen: np.ndarray,
             error: np.ndarray) -> list[tuple]:
    """Each read's DetailsReader over its own rows (rows: indices into the joined rows, in
    request order; request: the request of each)."""
    starts = np.cumsum([0] + sizes)
    bounds = np.searchsorted(request, np.arange(len(reads) + 1))
    out: list[tuple] = []
    for r in np.flatnonzero(np.diff(bounds)).tolist():
        mine = rows[bounds[r]:bounds[r + 1]]
        out.extend(reads[r].details(mine - starts[r], chosen[mine], error[mine]))
    return out


def _marks_of(marks: list[tuple], rows: np.ndarray) -> list[tuple]:
    """Per wanted row, the names of the capture counters that select it."""
    out = [()] * rows.shape[0]
    if marks:
        flags = np.stack([selected[rows] for _, selected in marks], axis=1)
        names = [counter.name for counter, _ in marks]
        for k in np.flatnonzero(flags.any(axis=1)).tolist():  # the few marked rows
            out[k] = tuple(name for name, flag in zip(names, flags[k].tolist()) if flag)
    return out
