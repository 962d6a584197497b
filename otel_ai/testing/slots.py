"""Feed a detector window statistics slot by slot, without spans: the river-style test
bench of every detector (its own tests, and yours when you write one).

    feeder = SlotFeeder(ErrorRateSpike(rule), [route])
    feeder.run(60, {route: {"requests": 100, "errors": 1}})      # ten minutes of normal
    found = feeder.run(3, {route: {"requests": 100, "errors": 30}})

Each slot is added to real windows (WindowStore.add_aggregates), closed, shown to the
detector in a WindowView, and learnt by the baselines a minute late, as the pipeline
does; incidents are not involved. Latency comes as a (count, milliseconds) pair per
subject: that many requests of about that duration.
"""
from __future__ import annotations

import numpy as np

from otel_ai.baseline import LEARN_LAG_SLOTS, Baselines
from otel_ai.histogram import BINS, bin_index
from otel_ai.model import DEPENDENCY, Anomaly, Subject
from otel_ai.windows import WindowStore, WindowView

SLOT_S = 10.0
START_NS = 1_771_164_000 * 1_000_000_000


class SlotFeeder:
    def __init__(self, detector, subjects: list[Subject], history_slots: int = 31, slot_s: float = SLOT_S):
        self.detector = detector
        self.subjects = list(subjects)
        self.kinds = np.array([s.kind == DEPENDENCY for s in self.subjects], dtype=np.int8)
        self.slot_ns = int(slot_s * 1e9)
        self.windows = WindowStore(self.slot_ns, history_slots, detector.counters)
        self.baselines = Baselines(slot_s, [c.name for c in detector.counters])
        self.frozen = np.zeros(len(self.subjects), dtype=bool)  # subjects with an open incident learn nothing
        self.windows.start_at(START_NS)
        while self.windows.first_open_slot < self.windows.first_slot:  # the empty slots opened early
            self.windows.close_one()
        self.closed = self.windows.first_slot - 1
        self.view: WindowView | None = None

    def sid(self, subject: Subject) -> int:
        return self.subjects.index(subject)

    def slot(self, counts: dict[Subject, dict[str, float]], latency: dict[Subject, tuple[float, float]] | None = None
             ) -> list[Anomaly]:
        """One slot of data, closed; returns what the detector found as of its end."""
        slot = self.closed + 1
        end_ns = np.full(len(counts), slot * self.slot_ns + self.slot_ns // 2, dtype=np.int64)
        ids = np.array([self.sid(s) for s in counts], dtype=np.int64)
        names = {name for values in counts.values() for name in values}
        columns = {name: np.array([values.get(name, 0.0) for values in counts.values()]) for name in names}
        hist = np.zeros((len(counts), BINS))
        for row, subject in enumerate(counts):
            if latency and subject in latency:
                n, ms = latency[subject]
                hist[row, bin_index(np.array([ms]))[0]] = n
        if len(counts):
            self.windows.add_aggregates(ids, end_ns, columns, hist)
        self.closed = self.windows.close_one()
        size = len(self.subjects)
        self.windows.ensure(size)
        self.view = WindowView(self.windows, self.closed, size, self.baselines, self.subjects, self.kinds)
        found = self.detector.detect(self.view)
        lagged = (self.closed - LEARN_LAG_SLOTS) % self.windows.ring
        self.baselines.learn(self.windows.slot(lagged, size), self.windows.hist[:size, lagged, :], self.frozen)
        return found

    def run(self, slots: int, counts: dict[Subject, dict[str, float]],
            latency: dict[Subject, tuple[float, float]] | None = None) -> list[Anomaly]:
        """The same data for `slots` slots; every anomaly found along the way."""
        found: list[Anomaly] = []
        for _ in range(slots):
            found += self.slot(counts, latency)
        return found

    def healthy(self, subject: Subject) -> bool | None:
        """The detector's health verdict on one subject as of the last closed slot."""
        sid = self.sid(subject)
        return self.detector.healthy(self.view, np.array([sid]))[sid]
