"""Measurements of the metrics path, for `otel-ai bench --metrics` and the tests.

Requests look like what OTel SDKs send: one resource per pod, `http.server.request.duration`
histograms with the semantic conventions' default boundaries (15 buckets) or
exponential buckets, route, method and status attributes, cumulative, exported in
rounds so that every round after the first is a delta of the one before.
"""
from __future__ import annotations

import gc
import math
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_ai.histogram import BINS
from otel_ai.metrics.points import RedPoints
from otel_ai.metrics.temporality import DeltaConverter
from otel_ai.testing.metric_requests import (
    CUMULATIVE,
    DEFAULT_BOUNDS_S,
    exponential_point,
    histogram_point,
    metric,
)

STATUSES = (200, 201, 204, 404, 500, 503)
ERROR_STATUS_INDEXES = (4, 5)
START_NS = 1_700_000_000 * 10**9
INTERVAL_NS = 10 * 10**9


@dataclass(frozen=True, slots=True)
class MetricsBenchResult:
    data_points: int
    streams: int
    wall_s: float
    cpu_s: float

    @property
    def data_points_per_s(self) -> float:
        return self.data_points / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_data_point(self) -> float:
        return self.cpu_s * 1e6 / self.data_points if self.data_points else 0.0


def histogram_requests(streams: int, rounds: int, points_per_request: int = 1000, pods: int = 50,
                       exponential: bool = False, seed: int = 1, routes: int | None = None) -> list[bytes]:
    """`rounds` exports of `streams` cumulative streams, as serialized requests: each pod
    serves its share of the streams, a route per six of them (one per status), cycling
    through `routes` routes if given (else every route is new)."""
    rng = np.random.default_rng(seed)
    per_pod = -(-streams // pods)
    totals = np.zeros((streams, len(DEFAULT_BOUNDS_S) + 1), dtype=np.int64)
    # Healthy traffic, so that no detector fires: ~1 % of a route's requests fail (its 5xx
    # streams), and latencies are log-normal around 30 ms.
    per_stream = np.where(np.isin(np.arange(streams) % len(STATUSES), ERROR_STATUS_INDEXES), 0.5, 40.0)
    rate = per_stream[:, None] * _bucket_shares(DEFAULT_BOUNDS_S, median_s=0.03, sigma=0.8)[None, :]
    bodies = []
    for r in range(rounds):
        totals += rng.poisson(rate, totals.shape)
        now = START_NS + (r + 1) * INTERVAL_NS
        for first in range(0, streams, points_per_request):
            request = ExportMetricsServiceRequest()
            current_pod = data = None
            for s in range(first, min(streams, first + points_per_request)):
                pod = s // per_pod
                if pod != current_pod:
                    current_pod = pod
                    service = f"svc-{pod % 10}"
                    found = metric(request, "http.server.request.duration", "s",
                                   {"service.name": service, "k8s.pod.name": f"{service}-pod-{pod}"})
                    data = found.exponential_histogram if exponential else found.histogram
                    data.aggregation_temporality = CUMULATIVE
                route = s // len(STATUSES) if routes is None else (s // len(STATUSES)) % routes
                attributes = {"http.route": f"/api/r{route}", "http.request.method": "GET",
                              "http.response.status_code": STATUSES[s % len(STATUSES)], "url.scheme": "http",
                              "network.protocol.version": "1.1"}
                counts = totals[s].tolist()
                if exponential:
                    exponential_point(data, attributes, counts[1:], START_NS, now, scale=2, offset=-30,
                                      zero_count=counts[0], minimum=0.001, maximum=12.0)
                else:
                    histogram_point(data, attributes, counts, START_NS, now, minimum=0.001, maximum=12.0)
            bodies.append(request.SerializeToString())
    return bodies


def _bucket_shares(bounds_s, median_s: float, sigma: float) -> np.ndarray:
    """Share of log-normal durations falling in each explicit bucket."""
    cdf = [0.5 * (1 + math.erf(math.log(b / median_s) / (sigma * math.sqrt(2)))) for b in bounds_s]
    return np.diff([0.0, *cdf, 1.0])


def _bench_pipeline(directory: str, max_routes_per_service: int):
    from otel_ai.config import load_settings
    from otel_ai.pipeline import Pipeline
    from otel_ai.store import IncidentStore

    settings = load_settings(env={})
    settings.limits.max_routes_per_service = max(settings.limits.max_routes_per_service, max_routes_per_service)
    store = IncidentStore(Path(directory) / "incidents.db")
    return Pipeline(settings, store, use_wall_clock=False), store


def measure_metrics(streams: int = 5000, rounds: int = 4, exponential: bool = False) -> MetricsBenchResult:
    """Throughput of the pipeline's metrics path (Pipeline.feed_metrics: parse, decode,
    re-bin, cumulative -> delta, rows spread over the slots, windows, the detectors on
    every slot that closes) on prepared requests; building them is not measured."""
    bodies = histogram_requests(streams, rounds, exponential=exponential)
    with tempfile.TemporaryDirectory(prefix="otel-ai-bench-metrics-") as tmp:
        pipeline, store = _bench_pipeline(tmp, streams)
        wall, cpu = time.perf_counter(), time.process_time()
        points = 0
        for body in bodies:
            points += pipeline.feed_metrics(body, "bench").data_points
        result = MetricsBenchResult(points, len(pipeline.metrics_stage.converter), time.perf_counter() - wall,
                                    time.process_time() - cpu)
        pipeline.stop()
        store.close()
    return result


@dataclass(frozen=True, slots=True)
class StreamMemory:
    streams: int
    traced_bytes: int  # Python and numpy allocations still held by the converter
    array_bytes: int  # of which: the per-stream numpy arrays

    @property
    def bytes_per_stream(self) -> float:
        return self.traced_bytes / self.streams if self.streams else 0.0


def measure_stream_memory(streams: int = 100_000, max_streams: int = 100_000, chunk: int = 10_000) -> StreamMemory:
    """Memory held by a DeltaConverter after `streams` distinct cumulative streams (fed
    straight as RedPoints, so only the converter's state is measured)."""
    gc.collect()
    tracemalloc.start()
    try:
        converter = DeltaConverter(max_streams=max_streams)
        baseline = tracemalloc.get_traced_memory()[0]
        for first in range(0, streams, chunk):
            converter.to_delta(_synthetic_points(first, min(streams, first + chunk)))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    return StreamMemory(len(converter), held, converter.state_bytes())


def measure_pipeline_memory(streams: int = 120_000, routes: int = 20) -> StreamMemory:
    """Memory the pipeline holds after one export of `streams` distinct cumulative
    streams (real requests through Pipeline.feed_metrics: decode, cumulative state, at
    most 100,000 streams; coverage, exemplars, windows, the detectors), `routes` routes
    per service and the
    streams spread over as many pods as it takes. The requests are built first, outside
    the measurement."""
    per_pod = routes * len(STATUSES)
    bodies = histogram_requests(streams, 1, pods=-(-streams // per_pod), routes=routes)
    with tempfile.TemporaryDirectory(prefix="otel-ai-bench-memory-") as tmp:
        pipeline, store = _bench_pipeline(tmp, routes)
        gc.collect()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for body in bodies:
                pipeline.feed_metrics(body, "bench")
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        converter = pipeline.metrics_stage.converter
        result = StreamMemory(len(converter), held, converter.state_bytes())
        pipeline.stop()
        store.close()
    return result


def _synthetic_points(first: int, last: int) -> RedPoints:
    n = last - first
    keys = (np.arange(first, last, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    return RedPoints(
        stream=keys, subject_id=np.zeros(n, np.int32), kind=np.full(n, 2, np.int8), resource=np.zeros(n, np.int32),
        start_ns=np.full(n, START_NS, np.int64), end_ns=np.full(n, START_NS + INTERVAL_NS, np.int64),
        count=np.full(n, 100.0), hist=np.full((n, BINS), 2.5), error=np.zeros(n, bool),
        client_error=np.zeros(n, bool), cumulative=np.ones(n, bool), http_status=np.full(n, 200, np.int16),
        grpc_status=np.full(n, -1, np.int8))
