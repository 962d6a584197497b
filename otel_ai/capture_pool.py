"""Fixed columns holding every capture the suspect store keeps, allocated once at start.

A capture used to live as a Python object with its own ids, numbers and ring entries:
~0.7 KiB each, so the process grew by ~45 MiB as the store filled to its budget over
the first minutes of a busy day. Here a capture is a slot: numbers and ids in numpy
columns made resident at start, pairs and exceptions as references to the tuples decode
already shares. The store's rings hold slot numbers (ints made once, here), so holding
a full store costs no more memory than an empty one. Capture objects are built again
only for the subject an anomaly asks about (`load`).
"""
from __future__ import annotations

from operator import attrgetter

import numpy as np

from otel_ai.decode import Capture

_LONG = 255  # length byte of an id too long for its column: kept whole in `_long_ids`
MAX_MARKS = 256  # distinct mark tuples kept shared (counter names: a handful)


class _IdColumn:
    """Ids of one width (16 bytes for a trace, 8 for a span) with their lengths, so an
    id shorter than OTLP's (malformed, but kept as sent) reads back exactly."""

    def __init__(self, size: int, width: int):
        self.width = width
        self.bytes = np.full((size, width), 0, np.uint8)
        self.length = np.full(size, 0, np.uint8)
        self._long_ids: dict[int, bytes] = {}  # by slot: at most one per slot, so bounded

    def write(self, slots: np.ndarray, ids: tuple[bytes, ...]) -> None:
        width = self.width
        if all(len(i) == width for i in ids):
            self.bytes[slots] = np.frombuffer(b"".join(ids), np.uint8).reshape(-1, width)
            self.length[slots] = width
            return
        for slot, value in zip(slots.tolist(), ids):
            if len(value) > width:
                self._long_ids[slot] = value
                self.length[slot] = _LONG
            else:
                self.bytes[slot, :len(value)] = np.frombuffer(value, np.uint8)
                self.length[slot] = len(value)

    def read(self, slot: int) -> bytes:
        length = int(self.length[slot])
        return self._long_ids[slot] if length == _LONG else self.bytes[slot, :length].tobytes()


class CapturePool:
    """`size` capture slots; `free` lists those no ring holds."""

    def __init__(self, size: int):
        self.size = size
        self.end_ns = np.full(size, 0, np.int64)
        self.duration_ms = np.full(size, 0.0)
        self.weight = np.full(size, 0.0)
        self.error = np.full(size, False)
        self.slow = np.full(size, False)
        self.sampled = np.full(size, False)
        # Which request a slot holds: one request can sit in two rings (a sampled error
        # is in the bad and the sampled ring), and attribution must count it once.
        self.request = np.full(size, 0, np.int64)
        self.trace_id = _IdColumn(size, 16)
        self.span_id = _IdColumn(size, 8)
        self.pairs = np.full(size, None, object)
        self.exceptions = np.full(size, None, object)
        self.marks = np.full(size, None, object)
        self.free: list[int] = list(range(size))
        self.requests = 0  # numbers handed out to requests so far
        self._marks: dict[tuple, tuple] = {}

    def put(self, slots: list[int], captures: list[Capture], requests: list[int]) -> None:
        """Slot slots[k] now holds captures[k], the request numbered requests[k]. A slot
        listed twice keeps its later capture: numpy assigns repeated indices in order."""
        if not slots:
            return
        at = np.array(slots, np.intp)
        end_ns, duration_ms, weight, error, slow, sampled, trace_id, span_id, pairs, exceptions, marks = zip(
            *map(_FIELDS, captures))
        self.end_ns[at] = end_ns
        self.duration_ms[at] = duration_ms
        self.weight[at] = weight
        self.error[at] = error
        self.slow[at] = slow
        self.sampled[at] = sampled
        self.request[at] = requests
        self.trace_id.write(at, trace_id)
        self.span_id.write(at, span_id)
        # Assigning tuples to an object column would unpack them: go by a 1-d object array.
        self.pairs[at] = _objects(pairs)
        self.exceptions[at] = _objects(exceptions)
        self.marks[at] = _objects([self._shared_marks(m) for m in marks])

    def _shared_marks(self, marks: tuple) -> tuple:
        if not marks:
            return ()
        found = self._marks.get(marks)
        if found is None:
            if len(self._marks) >= MAX_MARKS:
                self._marks.clear()
            found = self._marks[marks] = marks
        return found

    def load(self, subject_id: int, slots, built: dict[int, Capture]) -> list[Capture]:
        """The captures in these slots, oldest first. built: the captures made so far for
        this question, by request number, so a request in two rings is one object."""
        out = []
        for slot in slots:
            request = int(self.request[slot])
            capture = built.get(request)
            if capture is None:
                capture = built[request] = Capture(
                    subject_id, int(self.end_ns[slot]), float(self.duration_ms[slot]), bool(self.error[slot]),
                    bool(self.slow[slot]), bool(self.sampled[slot]),
                    self.trace_id.read(slot), self.pairs[slot], self.exceptions[slot], self.span_id.read(slot),
                    self.marks[slot], float(self.weight[slot]))
            out.append(capture)
        return out


_FIELDS = attrgetter("end_ns", "duration_ms", "weight", "error", "slow", "sampled", "trace_id", "span_id", "pairs",
                     "exceptions", "marks")


def _objects(values) -> np.ndarray:
    """A 1-d object array of these values: tuples stay whole (np.array would unpack them)."""
    return np.fromiter(values, object, len(values))
