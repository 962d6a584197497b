"""Metrics and spans of the same realistic traffic meet in the same subjects with the
same counts: the generator's deep, bursty traffic with faults, once as spans and once as
the request-duration metrics its instrumentations would have exported."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.decode import Decoder
from otel_ai.histogram import BINS, bin_index, percentile
from otel_ai.metrics.ingest import MetricsIngest
from otel_ai.subjects import SubjectTable
from otel_ai.testing.span_metrics import SpanMetrics
from otel_ai.testing.traffic import DEFAULT_START_NS, Fault, Noise, TrafficGenerator

INTERVAL_S = 10


@pytest.fixture(scope="module")
def both() -> tuple[SubjectTable, np.ndarray, MetricsIngest]:
    """Per subject from spans: [requests, errors, 4xx, latency bins...]; and the ingest fed metrics."""
    subjects = SubjectTable()
    decoder = Decoder(subjects)
    ingest = MetricsIngest(subjects=subjects, wall_clock_ns=None)
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
        ingest.consume_metrics(bridge.export(DEFAULT_START_NS + (i + 1) * INTERVAL_S * 10**9).SerializeToString(),
                               "test")
    return subjects, spans, ingest


def test_every_metric_subject_counts_what_its_spans_count(both) -> None:
    subjects, spans, ingest = both
    totals = ingest.totals
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
    _, spans, ingest = both
    checked = 0
    for sid in np.flatnonzero(ingest.totals.requests >= 300):
        from_spans = spans[sid, 3:]
        for q in (0.5, 0.95):
            metric_q = percentile(ingest.totals.hist[sid], q)
            span_q = percentile(from_spans, q)
            assert span_q / 1.6 < metric_q < span_q * 1.6, (sid, q, metric_q, span_q)
        checked += 1
    assert checked >= 3
