"""The MetricsConsumer behind the receivers: parse, decode, cumulative -> delta, and
bounded sums that tests and `check` read.

`RedTotals` stands where the generic windows will take RED deltas (issue 12, phase 2):
it adds each delta to its route or dependency in the event-time slot of the point's
end, as windows do with spans.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable

import numpy as np
from google.protobuf.message import DecodeError

from otel_ai.decode import TimeBounds
from otel_ai.histogram import BINS
from otel_ai.metrics.decode import MetricsDecoder
from otel_ai.metrics.points import Exemplar, RedPoints
from otel_ai.metrics.saturation import SaturationStore
from otel_ai.metrics.temporality import DeltaConverter
from otel_ai.proto.otel_ai.v1.metrics_view_pb2 import MetricsRequestView
from otel_ai.receiver.consumer import InvalidRequest, MetricsExportResult
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.subjects import SubjectTable

NS_PER_S = 10**9


class RedTotals:
    """Requests, errors, 4xx and latency bins of RED deltas: per subject in all, and per
    subject and slot in a bounded table (oldest cells dropped first)."""

    def __init__(self, slot_ns: int = 10 * NS_PER_S, max_cells: int = 100_000, exemplars_per_subject: int = 8):
        self.slot_ns = slot_ns
        self.max_cells = max_cells
        self.exemplars_per_subject = exemplars_per_subject
        self.requests = np.zeros(0)
        self.errors = np.zeros(0)
        self.client_errors = np.zeros(0)
        self.hist = np.zeros((0, BINS))
        self.cells: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (subject, slot) -> requests, errors, 4xx
        self.exemplars: dict[int, deque[Exemplar]] = {}

    def add(self, delta: RedPoints) -> None:
        if len(delta) == 0:
            return
        sid = delta.subject_id.astype(np.intp)
        self._ensure(int(sid.max()) + 1)
        errors = np.where(delta.error, delta.count, 0.0)
        client_errors = np.where(delta.client_error, delta.count, 0.0)
        np.add.at(self.requests, sid, delta.count)
        np.add.at(self.errors, sid, errors)
        np.add.at(self.client_errors, sid, client_errors)
        np.add.at(self.hist, sid, delta.hist)
        slots = delta.end_ns // self.slot_ns
        for i in range(len(delta)):
            key = (int(sid[i]), int(slots[i]))
            cell = self.cells.get(key)
            if cell is None:
                if len(self.cells) >= self.max_cells:
                    self.cells.popitem(last=False)
                cell = self.cells[key] = np.zeros(3)
            cell += (delta.count[i], errors[i], client_errors[i])
        for exemplar in delta.exemplars:
            subject = int(sid[exemplar.row])
            kept = self.exemplars.get(subject)
            if kept is None:
                kept = self.exemplars[subject] = deque(maxlen=self.exemplars_per_subject)
            kept.append(exemplar)

    def _ensure(self, size: int) -> None:
        grow = size - self.requests.shape[0]
        if grow > 0:
            self.requests = np.concatenate((self.requests, np.zeros(grow)))
            self.errors = np.concatenate((self.errors, np.zeros(grow)))
            self.client_errors = np.concatenate((self.client_errors, np.zeros(grow)))
            self.hist = np.concatenate((self.hist, np.zeros((grow, BINS))))

    def slot_series(self, subject_id: int) -> list[tuple[int, float, float, float]]:
        """(slot start ns, requests, errors, 4xx) of one subject, oldest first."""
        return sorted((slot * self.slot_ns, *map(float, cell)) for (sid, slot), cell in self.cells.items()
                      if sid == subject_id)


class MetricsIngest:
    """Decodes and converts under one lock (the decoder and converter are not
    thread-safe); nothing here does I/O."""

    def __init__(self, subjects: SubjectTable | None = None, metrics: SelfMetrics | None = None,
                 converter: DeltaConverter | None = None, totals: RedTotals | None = None,
                 saturation: SaturationStore | None = None,
                 wall_clock_ns: Callable[[], int] | None = time.time_ns,
                 max_age_s: float = 3600.0, max_skew_s: float = 600.0) -> None:
        self.subjects = subjects if subjects is not None else SubjectTable()
        self.metrics = metrics or SelfMetrics()
        self.decoder = MetricsDecoder(self.subjects)
        self.converter = converter or DeltaConverter()
        self.totals = totals or RedTotals()
        self.saturation = saturation or SaturationStore()
        self._wall_clock_ns = wall_clock_ns
        self._max_age_ns = int(max_age_s * NS_PER_S)
        self._max_skew_ns = int(max_skew_s * NS_PER_S)
        self._lock = threading.Lock()

    def _bounds(self) -> TimeBounds | None:
        """Plausible point times right now (None: replay, no wall clock)."""
        if self._wall_clock_ns is None:
            return None
        now = self._wall_clock_ns()
        return TimeBounds(now - self._max_age_ns, now + self._max_skew_ns)

    def consume_metrics(self, body: bytes, transport: str) -> MetricsExportResult:
        try:
            view = MetricsRequestView.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise InvalidRequest(str(exc) or "malformed protobuf") from None
        with self._lock:
            batch = self.decoder.decode(view, self._bounds())
            delta = self.converter.to_delta(batch.red)
            self.totals.add(delta)
            self.saturation.add(batch.utilization)
            streams = len(self.converter)
        self.metrics.data_points_received.labels(transport=transport).inc(batch.data_points - batch.rejected)
        if batch.rejected:
            self.metrics.data_points_rejected.labels(reason="invalid_data_point").inc(batch.rejected)
        self.metrics.metric_streams.set(streams)
        return MetricsExportResult(batch.rejected, batch.reject_message, batch.data_points)
