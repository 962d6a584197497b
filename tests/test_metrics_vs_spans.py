"""Metrics and spans of the same realistic traffic meet in the same subjects with the
same counts: the generator's deep, bursty traffic with faults, once as spans and once as
the request-duration metrics its instrumentations would have exported."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.decode import Decoder
from otel_ai.histogram import BINS, bin_index, percentile
from otel_ai.metrics.points import RedPoints
from otel_ai.metrics.stage import MetricsStage
from otel_ai.receiver.consumer import PROTOBUF
from otel_ai.subjects import SubjectTable
from otel_ai.testing.span_metrics import SpanMetrics
from otel_ai.testing.traffic import DEFAULT_START_NS, Fault, Noise, TrafficGenerator

INTERVAL_S = 10


class Totals:
    """Requests, errors, 4xx and latency bins per subject of the RED deltas, summed."""

    def __init__(self) -> None:
        self.requests, self.errors, self.client_errors = np.zeros(0), np.zeros(0), np.zeros(0)
        self.hist = np.zeros((0, BINS))

    def add(self, delta: RedPoints) -> None:
        if len(delta) == 0:
            return
        sid = delta.subject_id.astype(np.intp)
        grow = int(sid.max()) + 1 - self.requests.shape[0]
        if grow > 0:
            self.requests, self.errors, self.client_errors = (
                np.concatenate((column, np.zeros(grow))) for column in (self.requests, self.errors, self.client_errors))
            self.hist = np.concatenate((self.hist, np.zeros((grow, BINS))))
        np.add.at(self.requests, sid, delta.count)
        np.add.at(self.errors, sid, np.where(delta.error, delta.count, 0.0))
        np.add.at(self.client_errors, sid, np.where(delta.client_error, delta.count, 0.0))
        np.add.at(self.hist, sid, delta.hist)


@pytest.fixture(scope="module")
def both() -> tuple[SubjectTable, np.ndarray, Totals]:
    """Per subject from spans: [requests, errors, 4xx, latency bins...]; and the metrics' deltas summed."""
    subjects = SubjectTable()
    decoder = Decoder(subjects)
    stage = MetricsStage(subjects)
    totals = Totals()
    bridge = SpanMetrics(DEFAULT_START_NS)
    generator = TrafficGenerator(seed=5, rate_scale=0.6, faults=[Fault("dependency_errors", start_s=40),
                                                                 Fault("bad_pod", start_s=80)],
                                 noise=[Noise("4xx_burst", start_s=20, duration_s=60)])
    spans = np.zeros((0, 3 + BINS))
    for i, body in enumerate(generator.serialized_batches(150, interval_s=INTERVAL_S)):
        bridge.record(body)
        batch = decoder.decode(body, None)
        size = int(batch.subject_id.max()) + 1 if len(batch) else 0
        if spans.shape[0] < size:
            spans = np.concatenate((spans, np.zeros((size - spans.shape[0], 3 + BINS))))
        sid = batch.subject_id
        np.add.at(spans[:, 0], sid, 1)
        np.add.at(spans[:, 1], sid, batch.error)
        np.add.at(spans[:, 2], sid, batch.client_error)
        np.add.at(spans, (sid, 3 + bin_index(batch.duration_ms)), 1)
        body = bridge.export(DEFAULT_START_NS + (i + 1) * INTERVAL_S * 10**9).SerializeToString()
        totals.add(stage.converter.to_delta(stage.decode(body, PROTOBUF, None)[1].points))
    return subjects, spans, totals


def test_every_metric_subject_counts_what_its_spans_count(both) -> None:
    subjects, spans, totals = both
    compared = errors = 0
    for sid in np.flatnonzero(totals.requests):
        assert sid < spans.shape[0] and spans[sid, 0] > 0, f"{subjects.subjects[sid]} has metrics but no spans"
        from_spans = spans[sid]
        from_metrics = (totals.requests[sid], totals.errors[sid], totals.client_errors[sid])
        assert from_metrics == tuple(from_spans[:3]), subjects.subjects[sid]
        compared += 1
        errors += int(from_spans[1])
    routes = sum(1 for sid in np.flatnonzero(totals.requests) if subjects.subjects[sid].kind == "route")
    print(f"\nmetrics vs spans: {compared} subjects ({routes} routes) equal in requests, errors and 4xx; "
          f"{errors} server errors among them")
    assert routes >= 5 and compared > routes and errors > 50


def test_latency_from_buckets_is_close_to_latency_from_spans(both) -> None:
    """Cumulative points: every bucket spread over its bounds (their min and max are the
    stream's whole life, so unused), and the default boundaries are up to 2.5x wide."""
    _, spans, totals = both
    ratios = []
    for sid in np.flatnonzero(totals.requests >= 300):
        for q in (0.5, 0.95):
            ratios.append(percentile(totals.hist[sid], q) / percentile(spans[sid, 3:], q))
    worst = max(max(ratios), 1 / min(ratios))
    print(f"\nlatency from buckets: {len(ratios)} percentiles (p50, p95) within a factor of {worst:.2f} of the spans'")
    assert len(ratios) >= 6 and worst < 2.0
