"""Learnt state that survives a restart: the baselines (and any other named state, such as
the service graph's statistics) saved in the store's `snapshots` table as numpy .npz
blobs, the latest only per name, and read back at start.

The pipeline's worker copies the arrays when a save is due (every
`windows.baselineSnapshot` of wall time, and at clean shutdown); a thread of its own
compresses and writes them, so the hot path never waits on SQLite. A kill -9 loses at
most one interval of learning. Bounded: at most MAX_SUBJECTS subjects per snapshot (the
busiest), about 1 KB each before compression.
"""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Callable

import numpy as np

from otel_ai.baseline import Baselines
from otel_ai.model import DEPENDENCY, Subject
from otel_ai.store import IncidentStore
from otel_ai.subjects import OVERFLOW_ROUTE, OVERFLOW_SERVICE, SubjectTable

log = logging.getLogger(__name__)

BASELINES = "baselines"
GRAPH = "graph"
MAX_SUBJECTS = 20_000
_KEYS = ("kind", "service", "method", "route")


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def decode(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def baselines_snapshot(subjects: SubjectTable, baselines: Baselines, limit: int = MAX_SUBJECTS) -> dict[str, np.ndarray]:
    """The baselines of the `limit` busiest subjects, keyed by what the subjects are (ids
    are assigned afresh by every process). Overflow subjects are left out: they stand
    for different routes in every run."""
    size = len(subjects)
    ours = np.array([s.service != OVERFLOW_SERVICE and s.route != OVERFLOW_ROUTE for s in subjects.subjects[:size]],
                    dtype=bool)
    ids = np.flatnonzero(ours & (baselines.traffic(size) > 0))
    if ids.shape[0] > limit:
        ids = ids[np.argsort(-baselines.traffic(size)[ids], kind="stable")[:limit]]
    chosen = [subjects.subjects[i] for i in ids]
    keys = {f"subject.{key}": np.array([str(getattr(s, key)) for s in chosen], dtype=np.str_) for key in _KEYS}
    return {**keys, **{f"baseline.{name}": values for name, values in baselines.snapshot(ids).items()}}


def restore_baselines(arrays: dict[str, np.ndarray], subjects: SubjectTable, baselines: Baselines) -> int:
    """Intern the snapshot's subjects and put their baselines back; how many."""
    saved = [Subject(*fields) for fields in zip(*(arrays[f"subject.{key}"].tolist() for key in _KEYS))]
    ids = np.array([subjects.dependency(s.service) if s.kind == DEPENDENCY else subjects.route(s.service, s.method, s.route)
                    for s in saved], dtype=np.int64)
    # A full subject table folds the rest into an overflow subject: those are not restored.
    mine = np.array([subjects.subjects[i] == s for i, s in zip(ids, saved)], dtype=bool)
    rows = {name.removeprefix("baseline."): values[mine] for name, values in arrays.items() if name.startswith("baseline.")}
    baselines.restore(rows, ids[mine])
    return int(mine.sum())


def graph_snapshot(state: list[dict]) -> dict[str, np.ndarray]:
    """The service graph's learnt baselines (ServiceGraph.state()) as arrays: each
    component's name as JSON beside its row of sums."""
    names = np.array([json.dumps(entry["component"]) for entry in state], dtype=np.str_)
    sums = np.array([entry["sums"] for entry in state], dtype=np.float64)
    return {"component": names, "sums": sums}


def graph_state(arrays: dict[str, np.ndarray]) -> list[dict]:
    """ServiceGraph.restore()'s input back from graph_snapshot()'s arrays."""
    try:
        return [{"component": json.loads(name), "sums": sums.tolist()}
                for name, sums in zip(arrays["component"].tolist(), arrays["sums"])]
    except json.JSONDecodeError as exc:
        raise ValueError(f"a graph component's name is not JSON: {exc}") from None


class SnapshotWriter:
    """Saves named snapshots off the caller's thread: one pending save per name, the
    newest wins; close() writes what is pending."""

    def __init__(self, store: IncidentStore, every_s: float, clock: Callable[[], float] = time.monotonic,
                 wall_clock_ns: Callable[[], int] = time.time_ns):
        self.store = store
        self.every_s = every_s
        self.clock = clock
        self.wall_clock_ns = wall_clock_ns
        self._pending: dict[str, dict[str, np.ndarray]] = {}
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last = clock()
        self.saved = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-ai-snapshots", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def due(self) -> bool:
        return self.running and self.clock() - self._last >= self.every_s

    def put(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        with self._cv:
            self._pending[name] = arrays
            self._last = self.clock()
            self._cv.notify()

    def load(self, name: str) -> tuple[int, dict[str, np.ndarray]] | None:
        """(saved_at_ns, arrays) of the saved snapshot `name`, None if there is none.
        ValueError if it cannot be read."""
        row = self.store.load_snapshot(name)
        if row is None:
            return None
        try:
            return row[0], decode(row[1])
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"cannot read the saved {name} snapshot: {exc}") from None

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if not self._pending:
                    return
                name, arrays = self._pending.popitem()
            try:
                self.store.save_snapshot(name, self.wall_clock_ns(), encode(arrays))
                self.saved += 1
            except Exception:
                log.exception("could not save the %s snapshot; the next one will try again", name)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is pending, then stop."""
        if self._thread is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout_s)
        self._thread = None
