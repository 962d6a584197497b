"""Cumulative -> delta: exact deltas, resets that never spike, bounded state."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.histogram import BINS
from otel_ai.metrics.bench import measure_pipeline_memory, measure_stream_memory
from otel_ai.metrics.points import Exemplar, RedPoints
from otel_ai.metrics.temporality import DeltaConverter

S = 10**9
T0 = 1_771_164_000 * S
MEMORY_CAP_BYTES = 64 * 2**20  # documented in docs/metrics.md for 100k streams
PIPELINE_FIXED_BYTES = 8 * 2**20  # the rest of the pipeline's state, whatever the stream count


def points(rows: list[dict]) -> RedPoints:
    """Rows of {stream, start, end, count[, hist, cumulative, subject]}; hist defaults to all in bin 10."""
    n = len(rows)
    hist = np.zeros((n, BINS))
    for i, row in enumerate(rows):
        hist[i] = row.get("hist", np.eye(BINS)[10] * row["count"])
    return RedPoints(
        stream=np.array([r["stream"] for r in rows], dtype=np.uint64),
        subject_id=np.array([r.get("subject", 0) for r in rows], dtype=np.int32),
        kind=np.full(n, 2, np.int8), resource=np.zeros(n, np.int32),
        start_ns=np.array([r["start"] for r in rows], dtype=np.int64),
        end_ns=np.array([r["end"] for r in rows], dtype=np.int64),
        count=np.array([r["count"] for r in rows], dtype=np.float64), hist=hist,
        error=np.zeros(n, bool), client_error=np.zeros(n, bool),
        cumulative=np.array([r.get("cumulative", True) for r in rows], dtype=bool),
        http_status=np.full(n, 200, np.int16), grpc_status=np.full(n, -1, np.int8))


def cumulative(stream: int, start: int, end: int, count: float, **extra) -> dict:
    return {"stream": stream, "start": start, "end": end, "count": count, **extra}


def test_cumulative_points_become_exact_deltas() -> None:
    converter = DeltaConverter()
    first = converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 50)]))
    second = converter.to_delta(points([cumulative(1, T0, T0 + 20 * S, 80)]))
    third = converter.to_delta(points([cumulative(1, T0, T0 + 30 * S, 80)]))
    assert first.count.tolist() == [50.0]  # a fresh stream: its first interval counts
    assert second.count.tolist() == [30.0]
    assert (second.start_ns[0], second.end_ns[0]) == (T0 + 10 * S, T0 + 20 * S)
    assert second.hist[0, 10] == pytest.approx(30) and second.hist.sum() == pytest.approx(30)
    assert third.count.tolist() == [0.0]
    assert not second.cumulative.any()


def test_an_old_stream_seen_for_the_first_time_only_sets_the_base() -> None:
    converter = DeltaConverter(fresh_start_ns=300 * S)
    # Running for two hours before otel-ai saw it: its value is not one interval's traffic.
    first = converter.to_delta(points([cumulative(1, T0 - 7200 * S, T0, 1_000_000)]))
    second = converter.to_delta(points([cumulative(1, T0 - 7200 * S, T0 + 10 * S, 1_000_140)]))
    assert len(first) == 0
    assert second.count.tolist() == [140.0]
    assert converter.stats.first_points == 1


def test_a_restart_is_a_new_stream_and_never_a_spike() -> None:
    converter = DeltaConverter()
    out = []
    out.append(converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 100)])))
    out.append(converter.to_delta(points([cumulative(1, T0, T0 + 20 * S, 200)])))
    # The process restarts at +25 s: new start time, counter from zero (decode gives it a new stream key).
    out.append(converter.to_delta(points([cumulative(2, T0 + 25 * S, T0 + 30 * S, 40)])))
    out.append(converter.to_delta(points([cumulative(2, T0 + 25 * S, T0 + 40 * S, 140)])))
    counts = [c for batch in out for c in batch.count.tolist()]
    assert counts == [100.0, 100.0, 40.0, 100.0]
    assert max(counts) <= 100.0  # nothing larger than one interval of real traffic


def test_a_value_going_down_without_a_new_start_is_a_reset() -> None:
    converter = DeltaConverter()
    converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 500)]))
    reset = converter.to_delta(points([cumulative(1, T0, T0 + 20 * S, 30)]))
    after = converter.to_delta(points([cumulative(1, T0, T0 + 30 * S, 90)]))
    assert reset.count.tolist() == [30.0] and reset.start_ns[0] == T0 + 10 * S
    assert after.count.tolist() == [60.0]
    assert converter.stats.resets == 1


def test_duplicates_and_out_of_order_points_are_dropped() -> None:
    converter = DeltaConverter()
    converter.to_delta(points([cumulative(1, T0, T0 + 20 * S, 100)]))
    late = converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 60), cumulative(1, T0, T0 + 20 * S, 100)]))
    assert len(late) == 0 and converter.stats.stale == 2
    assert converter.to_delta(points([cumulative(1, T0, T0 + 30 * S, 130)])).count.tolist() == [30.0]


def test_several_exports_of_one_stream_in_one_request_apply_in_time_order() -> None:
    converter = DeltaConverter()
    batch = points([cumulative(1, T0, T0 + 30 * S, 90), cumulative(1, T0, T0 + 10 * S, 20),
                    cumulative(1, T0, T0 + 20 * S, 50)])
    delta = converter.to_delta(batch)
    order = np.argsort(delta.end_ns)
    assert delta.count[order].tolist() == [20.0, 30.0, 40.0]


def test_delta_points_pass_through() -> None:
    converter = DeltaConverter()
    batch = points([{"stream": 5, "start": T0, "end": T0 + 10 * S, "count": 7, "cumulative": False}] * 2)
    delta = converter.to_delta(batch)
    assert delta.count.tolist() == [7.0, 7.0] and len(converter) == 0


def test_two_writers_sharing_every_attribute_stay_two_streams() -> None:
    # Workers without service.instance.id: same attributes, different start times, interleaved.
    converter = DeltaConverter()
    total = 0.0
    a = b = 0
    for i in range(1, 6):
        a += 10
        b += 25
        total += converter.to_delta(points([cumulative(1, T0, T0 + i * 10 * S, a)])).count.sum()
        total += converter.to_delta(points([cumulative(2, T0 + S, T0 + i * 10 * S + S, b)])).count.sum()
    assert total == a + b


def test_downscaled_buckets_are_not_a_reset() -> None:
    # An exponential histogram that downscales moves re-binned mass between bins.
    converter = DeltaConverter()
    before = np.zeros(BINS)
    before[[10, 11]] = [60, 40]
    after = np.zeros(BINS)
    after[[10, 11]] = [55, 65]  # bin 10 shrank, the count grew by 20
    converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 100, hist=before)]))
    delta = converter.to_delta(points([cumulative(1, T0, T0 + 20 * S, 120, hist=after)]))
    assert delta.count.tolist() == [20.0]
    assert delta.hist.sum() == pytest.approx(20) and (delta.hist >= 0).all()
    assert converter.stats.resets == 0


def test_only_new_exemplars_are_passed_on() -> None:
    converter = DeltaConverter()
    first = points([cumulative(1, T0, T0 + 10 * S, 10)])
    first.exemplars = [Exemplar(0, T0 + 5 * S, b"\x01" * 16, b"\x01" * 8, 12.0)]
    converter.to_delta(first)
    second = points([cumulative(1, T0, T0 + 20 * S, 20)])
    second.exemplars = [Exemplar(0, T0 + 5 * S, b"\x01" * 16, b"\x01" * 8, 12.0),  # repeated from before
                        Exemplar(0, T0 + 15 * S, b"\x02" * 16, b"\x02" * 8, 30.0)]
    delta = converter.to_delta(second)
    assert [e.trace_id for e in delta.exemplars] == [b"\x02" * 16]


def test_idle_streams_expire() -> None:
    converter = DeltaConverter(idle_ns=600 * S)
    converter.to_delta(points([cumulative(1, T0, T0 + 10 * S, 10), cumulative(2, T0, T0 + 10 * S, 10)]))
    converter.to_delta(points([cumulative(2, T0, T0 + 400 * S, 20)]))
    delta = converter.to_delta(points([cumulative(2, T0, T0 + 700 * S, 30)]))
    assert len(converter) == 1 and converter.stats.expired == 1  # stream 1, idle for 690 s
    assert delta.count.tolist() == [10.0]


def test_the_table_is_bounded_and_evicts_the_least_recently_seen() -> None:
    converter = DeltaConverter(max_streams=64)
    for i in range(10):  # 10 rounds of 16 new streams, each round later than the one before
        rows = [cumulative(1000 * i + j, T0, T0 + (i + 1) * S, 5) for j in range(16)]
        converter.to_delta(points(rows))
        assert len(converter) <= 64
    assert converter.stats.evicted >= 160 - 64
    kept_round = converter.to_delta(points([cumulative(9000 + j, T0, T0 + 20 * S, 9) for j in range(16)]))
    assert kept_round.count.tolist() == [4.0] * 16  # the newest streams survived: true deltas


def test_a_request_larger_than_the_table_still_converts() -> None:
    converter = DeltaConverter(max_streams=10)
    delta = converter.to_delta(points([cumulative(j, T0, T0 + S, 3) for j in range(25)]))
    assert delta.count.tolist() == [3.0] * 25 and len(converter) <= 10


def test_100k_streams_stay_under_the_stated_memory_cap() -> None:
    measured = measure_stream_memory(streams=120_000, max_streams=100_000)
    print(f"\n100k-stream cap: {measured.streams} streams kept, {measured.traced_bytes / 2**20:.1f} MiB held "
          f"({measured.bytes_per_stream:.0f} B/stream; arrays {measured.array_bytes / 2**20:.1f} MiB)")
    assert measured.streams <= 100_000
    assert measured.traced_bytes <= MEMORY_CAP_BYTES


def test_streams_through_the_pipeline_hold_no_more_than_the_converter_budget() -> None:
    """Real requests through the whole metrics path: nothing but the cumulative state grows
    with the stream count. Small, to stay fast; docs/metrics.md has the 120k-stream run."""
    streams = 12_000
    measured = measure_pipeline_memory(streams)
    budget = PIPELINE_FIXED_BYTES + streams * MEMORY_CAP_BYTES / 100_000
    print(f"\npipeline, {streams} streams: {measured.traced_bytes / 2**20:.1f} MiB held "
          f"({measured.array_bytes / 2**20:.1f} MiB of it the converter's arrays); budget {budget / 2**20:.1f} MiB")
    assert measured.streams == streams
    assert measured.traced_bytes <= budget
