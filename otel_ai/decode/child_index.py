"""Recent CLIENT calls by (trace key, service): which dependency a request called, and
whether that call failed or took most of the request's time.

A ring of MAX_CALLS calls in columns allocated at start; per (trace key, service) the
newest call's sequence number, and per call the one before it of the same key. A call
the ring has written over ends its key's chain. A request's calls are those that ended
within it: the walk stops at the first call that ended before the request began (an
earlier request of the same trace to the same service, or a trace id seen again). A dict of lists of call tuples had
grown RSS for minutes (a key, a list and a tuple per call); here a call keeps no object
of its own (its numbers are in `array` columns, its key is its first call's). `array`
rather than numpy: a request's lookup walks its calls one by one, and numpy's per-item
access cost ~5 % of the worker's time on the bench.
"""
from __future__ import annotations

from array import array

# A request's client calls arrive with it or just before (one process exports both), so
# a few seconds of the interesting ones suffice: ~7 s at 4,400 of them a second (a 300k
# spans/s bench), more when slower.
MAX_CALLS = 32_768
MAX_CALLS_PER_KEY = 32  # the first ones of a request: enough to name what it called
# A call and its request are timed by one process's clock; this covers the rounding of a
# request's start (its end minus its duration in ms).
CLOCK_SLACK_NS = 1_000_000


class ChildIndex:
    """Not thread-safe: decode's lock serialises its callers."""

    def __init__(self, max_calls: int = MAX_CALLS):
        self.max_calls = max_calls
        self._seq = array("q", [-1]) * max_calls  # which call each cell holds
        self._older = array("q", [-1]) * max_calls  # the key's call before it (a sequence number)
        self._depth = array("i", [0]) * max_calls  # calls of the key up to this one
        self._duration_ms = array("d", [0.0]) * max_calls
        self._end_ns = array("q", [0]) * max_calls
        self._error = array("b", [0]) * max_calls
        self._dependency: list = [None] * max_calls
        self._exceptions: list = [None] * max_calls
        self._key: list = [None] * max_calls
        self._newest: dict[tuple[int, str], int] = {}  # at most max_calls keys: one per cell
        self._next = 0

    def __len__(self) -> int:
        """Keys with a call still held."""
        return len(self._newest)

    def add(self, trace_key: int, service: str, dependency: str, error: bool, duration_ms: float,
            exceptions: tuple, end_ns: int) -> None:
        key = (trace_key, service)
        newest_calls = self._newest
        size = self.max_calls
        newest = newest_calls.get(key)
        depth = 1
        if newest is not None:
            before = newest % size
            if self._seq[before] == newest:  # still held
                depth = self._depth[before] + 1
                if depth > MAX_CALLS_PER_KEY:
                    return
                key = self._key[before]  # the same object: one per key, not per call
            else:
                newest = -1
        else:
            newest = -1
        seq = self._next
        self._next = seq + 1
        cell = seq % size
        keys = self._key
        overwritten = keys[cell]
        if overwritten is not None and newest_calls.get(overwritten) == seq - size:
            del newest_calls[overwritten]  # its newest call goes: so does the key
        self._seq[cell] = seq
        self._older[cell] = newest
        self._depth[cell] = depth
        self._duration_ms[cell] = duration_ms
        self._end_ns[cell] = end_ns
        self._error[cell] = error
        self._dependency[cell] = dependency
        self._exceptions[cell] = exceptions
        keys[cell] = key
        newest_calls[key] = seq

    def get(self, trace_key: int, service: str, start_ns: int, end_ns: int) -> list[tuple[str, bool, float, tuple]]:
        """(dependency, error, duration_ms, exceptions) of the key's held calls that ended
        between start_ns and end_ns (the request's), oldest first."""
        seq = self._newest.get((trace_key, service))
        if seq is None:
            return []
        out = []
        held, older, ends, size = self._seq, self._older, self._end_ns, self.max_calls
        since, until = start_ns - CLOCK_SLACK_NS, end_ns + CLOCK_SLACK_NS
        while seq >= 0:  # a busy request walks up to 32 calls: no method call per step
            cell = seq % size
            if held[cell] != seq:
                break  # written over: the older calls are gone too
            ended = ends[cell]
            if ended < since:
                break  # an earlier request's: older ones are earlier still
            if ended <= until:
                out.append((self._dependency[cell], self._error[cell] != 0, self._duration_ms[cell],
                            self._exceptions[cell]))
            seq = older[cell]
        out.reverse()
        return out
