"""The pipeline worker merges the requests queued while it was busy into one batch:
the windows and the suspects must end up exactly as if each request had been processed
on its own, and every request must be counted as processed."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from otel_ai.config import load_settings
from otel_ai.decode import Decoder
from otel_ai.decode.captures import MAX_CAPTURES_PER_SUBJECT
from otel_ai.decode.columns import merge_batches
from otel_ai import pipeline as pipeline_module
from otel_ai.pipeline import Pipeline
from otel_ai.store import IncidentStore
from otel_ai.subjects import SubjectTable
from otel_ai.testing.harness import wait_for
from otel_ai.testing.scenarios import scenario


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    # Failing dependency calls: errors, client captures, the child index and retries all occur.
    return list(scenario("dependency_errors", seed=3, warmup_s=5, rate_scale=0.3).serialized_batches(8, 0.25))


def test_merge_keeps_every_column_in_order_and_sums_the_counts(bodies):
    decoder = Decoder(SubjectTable())
    batches = [decoder.decode(body, None) for body in bodies[:5]]
    batches[1].derived["only_here"] = np.ones(len(batches[1]), dtype=bool)
    shared = {name for name in batches[0].derived}
    for batch in batches:
        batch.derived["everywhere"] = batch.error.copy()
    merged = merge_batches(batches)
    assert np.array_equal(merged.trace_key, np.concatenate([b.trace_key for b in batches]))
    assert np.array_equal(merged.duration_ms, np.concatenate([b.duration_ms for b in batches]))
    assert merged.spans_total == sum(b.spans_total for b in batches)
    assert merged.captures == [c for b in batches for c in b.captures]
    assert merged.max_end_ns == max(b.max_end_ns for b in batches)
    assert merged.median_end_ns == int(np.median(merged.end_ns))
    assert "only_here" not in merged.derived  # recomputed on demand, never half a mask
    assert np.array_equal(merged.derived["everywhere"], merged.error)
    assert shared <= set(merged.derived)
    assert merge_batches(batches[:1]) is batches[0]


def test_merge_keeps_the_internal_spans_the_graph_join_reparents_under():
    from otel_ai.decode.contract import InternalSpans, SpanBatch

    def batch(internal: InternalSpans | None) -> SpanBatch:
        empty = np.zeros(0)
        return SpanBatch(np.zeros(0, np.int32), np.zeros(0, np.int64), empty, np.zeros(0, bool), np.zeros(0, bool),
                         internal=internal)

    first = InternalSpans(np.array([1], np.uint64), np.array([11], np.uint64), np.array([0], np.uint64))
    third = InternalSpans(np.array([3, 3], np.uint64), np.array([31, 32], np.uint64), np.array([0, 31], np.uint64))
    merged = merge_batches([batch(first), batch(None), batch(third)])
    assert merged.internal.trace_key.tolist() == [1, 3, 3]
    assert merged.internal.span_id.tolist() == [11, 31, 32]
    assert merged.internal.parent_span_id.tolist() == [0, 0, 31]
    assert merge_batches([batch(None), batch(None)]).internal is None


def test_captures_picked_for_many_requests_at_once_are_those_each_gets_alone(tmp_path, bodies):
    at_once, one_by_one = _pipeline(tmp_path, "at_once").decoder, _pipeline(tmp_path, "one_by_one").decoder
    assert at_once.capture_marks  # the retries counter: stateful, fed every span once and in order either way
    for decoder in (at_once, one_by_one):
        decoder.slow_threshold_ms = np.full(12, 1.0)  # most requests are slow; subjects past 12 have no threshold
    alone = [one_by_one.decode(body, None) for body in bodies]
    deferred = [at_once.decode(body, None, defer_captures=True) for body in bodies]
    assert all(b.capture_source is not None and not b.captures for b in deferred)
    at_once.pick_captures(deferred)
    assert all(b.capture_source is None for b in deferred)
    assert [b.captures for b in deferred] == [b.captures for b in alone]
    # the worker's way: the merge first, whose columns the pick then reads instead of joining
    worker = _pipeline(tmp_path, "worker").decoder
    worker.slow_threshold_ms = np.full(12, 1.0)
    queued = [worker.decode(body, None, defer_captures=True) for body in bodies]
    merged = merge_batches(queued)
    worker.pick_captures(queued, merged)
    assert [b.captures for b in queued] == [b.captures for b in alone]
    assert np.array_equal(merged.derived["retries"], np.concatenate([b.derived["retries"] for b in alone]))
    # a cap over all the requests at once would have kept fewer
    per_subject = Counter(c.subject_id for b in alone for c in b.captures)
    assert max(per_subject.values()) > MAX_CAPTURES_PER_SUBJECT
    assert any(c.slow for b in alone for c in b.captures)


def _pipeline(tmp_path, name: str) -> Pipeline:
    return Pipeline(load_settings(env={}), IncidentStore(tmp_path / f"{name}.db"), [], use_wall_clock=False)


def _captured(pipeline: Pipeline) -> dict:
    held = {sid: pipeline.captures.held(sid) for sid in pipeline.captures._subjects}
    return {sid: (len(e["bad"]), len(e["slow"]), len(e["sampled"]), len(e["marked"]), [c.trace_id for c in e["bad"]])
            for sid, e in held.items()}


def test_queued_requests_merged_by_the_worker_count_as_if_processed_one_by_one(tmp_path, bodies, monkeypatch):
    monkeypatch.setattr(pipeline_module, "MERGE_SPANS", 300)  # several merges of a few requests each
    monkeypatch.setattr(pipeline_module, "DEFER_SPANS", 600)  # past a backlog, captures are picked at decode
    one_by_one = _pipeline(tmp_path, "one")
    for body in bodies:
        one_by_one.process(one_by_one.decode(body))

    merged = _pipeline(tmp_path, "merged")
    for body in bodies:  # the worker is not running yet: every request waits in the queue
        merged.consume(body, "test")
    assert sum(len(b) for b in merged._queue) > 3 * 300 and len(merged._queue) > 8
    assert {b.capture_source is None for b in merged._queue} == {True, False}  # both ways
    merged.start(now_ns=0)
    try:
        wait_for("every request processed", lambda: merged.batches_processed == len(bodies), 30)
    finally:
        merged.stop()
    assert merged.queue_depth() == 0
    for name, values in one_by_one.windows.values.items():
        # float32 cells: a sum of durations (busy_ms) rounds differently when added at once
        np.testing.assert_allclose(merged.windows.values[name], values, rtol=1e-6, err_msg=name)
    assert np.array_equal(one_by_one.windows.hist, merged.windows.hist)
    assert one_by_one.windows.values["requests"].sum() > 0
    assert _captured(merged) == _captured(one_by_one)


def _counting_merges(pipeline: Pipeline, monkeypatch) -> list[int]:
    """The rows of each batch the pipeline processes, as they come."""
    sizes: list[int] = []
    process = pipeline.process
    monkeypatch.setattr(pipeline, "process", lambda batch: (sizes.append(len(batch)), process(batch))[1])
    return sizes


def test_the_worker_gathers_requests_into_one_merge_until_a_merge_is_worth_it(tmp_path, bodies, monkeypatch):
    monkeypatch.setattr(pipeline_module, "MERGE_WAIT_S", 60.0)  # only a merge's worth ends the wait
    first, second, third = (len(Decoder(SubjectTable()).decode(body, None)) for body in bodies[:3])
    monkeypatch.setattr(pipeline_module, "MERGE_SPANS", second + third)
    pipeline = _pipeline(tmp_path, "gathering")
    merges = _counting_merges(pipeline, monkeypatch)
    pipeline.start(now_ns=0)
    try:
        pipeline.consume(bodies[0], "test")  # the first goes alone: it places the windows
        wait_for("the first request processed", lambda: pipeline.batches_processed == 1, 10)
        pipeline.consume(bodies[1], "test")
        pipeline.consume(bodies[2], "test")
        wait_for("both gathered into one merge", lambda: pipeline.batches_processed == 3, 10)
    finally:
        pipeline.stop()
    assert merges == [first, second + third]


def test_wait_idle_does_not_wait_for_the_worker_to_gather_a_merge(tmp_path, bodies, monkeypatch):
    monkeypatch.setattr(pipeline_module, "MERGE_WAIT_S", 60.0)
    pipeline = _pipeline(tmp_path, "idle")
    merges = _counting_merges(pipeline, monkeypatch)
    pipeline.start(now_ns=0)
    try:
        for body in bodies[:3]:
            pipeline.consume(body, "test")
        assert pipeline.wait_idle(10)
        assert pipeline.batches_processed == 3
    finally:
        pipeline.stop()
    assert 1 <= len(merges) <= 3


def test_a_request_reaching_past_the_open_slots_waits_for_the_next_merge(tmp_path, bodies):
    from otel_ai.bench_client import _Batch  # re-times a request: it then ends at the given time

    pipeline = _pipeline(tmp_path, "ahead")
    pipeline.process(pipeline.decode(bodies[0]))  # places the windows
    ends_ns = pipeline.clock.max_end_ns
    # The last ends past the open slots (~150 s on), but within them once the slots
    # before it closed: merged with the others, its spans would be dropped as too early.
    for late_s in (1, 100, 200):
        pipeline.consume(_Batch(bodies[1]).payload(ends_ns + late_s * 1_000_000_000), "test")
    with pipeline._cv:
        assert pipeline._merge_ready()  # no point gathering more: the last cannot join
        taken = pipeline._take_queued()
    assert len(taken) == 2 and pipeline.queue_depth() == 1
    pipeline.process(merge_batches(taken))
    with pipeline._cv:
        ahead = pipeline._take_queued()
    pipeline.process(ahead[0])  # alone: the slots before it closed first
    assert "ahead_of_clock" not in {dict(k).get("reason") for k in _dropped(pipeline)}


def _dropped(pipeline: Pipeline) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for metric in pipeline.metrics.registry.collect()
            for s in metric.samples if s.name == "otel_ai_spans_dropped_total" and s.value}


def test_equal_pairs_and_exceptions_of_captures_are_one_object(bodies):
    from otel_ai.decode.captures import SharedTuples

    decoder = Decoder(SubjectTable())
    captures = [c for body in bodies for c in decoder.decode(body, None).captures]
    assert len(captures) > 20
    assert len({id(c.pairs) for c in captures}) == len({c.pairs for c in captures}) < len(captures)
    failed = [c for c in captures if c.exceptions]
    assert failed and len({id(c.exceptions) for c in failed}) == len({c.exceptions for c in failed})
    shared = SharedTuples(max_entries=2)  # bounded: cleared when full
    first = shared.of(tuple(["a"]))
    assert shared.of(tuple(["a"])) is first
    shared.of(tuple(["b"]))
    shared.of(tuple(["c"]))  # the third: cleared, then kept
    assert len(shared._tuples) == 1 and shared.of(tuple(["a"])) is not first and shared.of(()) == ()
