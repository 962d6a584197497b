"""The service graph's parts on hand-made spans: the cross-batch join (self time, edge
overhead, error origin, callers and callees), its memory cap, component interning and
the per-slot stats with their baseline."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.decode import SpanBatch
from otel_ai.decode.contract import InternalSpans
from otel_ai.graph.components import EDGE, NONE, OVERFLOW, POD, ROUTE, SERVICE_FLAG, ComponentTable, edge_keys, route_keys
from otel_ai.graph.join import TraceJoin
from otel_ai.graph.stats import COUNT, ERRORS, ORIGINS, RECENT_SLOTS, SELF, TOTAL, ComponentStats

SERVER, CLIENT = 2, 3
MS = 1_000_000
T0 = 1_000_000 * 1_000_000_000  # any event time far from 0
SLOT = 10_000 * MS


def batch(*spans: dict) -> SpanBatch:
    """spans: dicts with trace, span, parent (0: root), kind, subject, start/end (ms after T0),
    and optionally service, resource, error, weight."""
    def col(key, dtype, default=0):
        return np.array([s.get(key, default) for s in spans], dtype=dtype)

    start = T0 + col("start", np.int64) * MS
    end = T0 + col("end", np.int64) * MS
    return SpanBatch(
        subject_id=col("subject", np.int32), end_ns=end, duration_ms=(end - start) / 1e6,
        error=col("error", bool, False), client_error=np.zeros(len(spans), bool), kind=col("kind", np.int8),
        service_id=col("service", np.int32), resource_id=col("resource", np.int32), start_ns=start,
        weight=col("weight", np.float32, 1.0), trace_key=col("trace", np.uint64), span_id=col("span", np.uint64),
        parent_span_id=col("parent", np.uint64),
    )


def rows_of(join: TraceJoin, obs) -> dict:
    """Observations by (kind, a, b, c) of their component."""
    kind, a, b, c = join.components.fields()
    out = {}
    for i in range(len(obs)):
        cid = obs.component[i]
        out.setdefault((int(kind[cid]), int(a[cid]), int(b[cid]), int(c[cid])), []).append(
            (round(float(obs.total_ms[i]), 3), round(float(obs.self_ms[i]), 3), bool(obs.error[i]), bool(obs.origin[i])))
    return out


# Route subjects 1..3, dependency subjects 10..12; services 0..2; resources 5..7.
def three_hop_trace(trace: int = 7, leaf_fails: bool = False, own_fails: bool = False) -> list[dict]:
    """gateway route 1 -> client (dep 10) -> api route 2 -> client (dep 11, a database).
    The gateway's client call is retried in parallel: a second client overlaps the first."""
    failing = leaf_fails or own_fails
    return [
        dict(trace=trace, span=1, parent=0, kind=SERVER, subject=1, service=0, resource=5, start=0, end=100, error=failing),
        dict(trace=trace, span=2, parent=1, kind=CLIENT, subject=10, service=0, resource=5, start=10, end=60, error=failing),
        dict(trace=trace, span=3, parent=1, kind=CLIENT, subject=12, service=0, resource=5, start=40, end=70),
        dict(trace=trace, span=4, parent=2, kind=SERVER, subject=2, service=1, resource=6, start=15, end=55, error=failing),
        dict(trace=trace, span=5, parent=4, kind=CLIENT, subject=11, service=1, resource=6, start=20, end=30, error=leaf_fails),
    ]


# ----------------------------------------------------------------------------- the join

def test_self_time_is_duration_minus_the_union_of_children_and_edges_name_caller_and_callee():
    join = TraceJoin(ComponentTable())
    join.add(batch(*three_hop_trace()))
    found = rows_of(join, join.advance(T0 + 200 * MS))
    # gateway: children cover [10, 70] (two overlapping calls): 60 ms, so 40 ms of its own
    assert found[(ROUTE, 1, 0, 0)] == [(100.0, 40.0, False, False)]
    assert found[(POD, 5, 0, 0)] == [(100.0, 40.0, False, False)]
    # the call into route 2 took 50 ms, its server span 40: 10 ms on the wire
    assert found[(EDGE, 1, 10, 2)] == [(50.0, 10.0, False, False)]
    # the database has no server span: the whole call is its own time
    assert found[(EDGE, 2, 11, NONE)] == [(10.0, 10.0, False, False)]
    assert found[(ROUTE, 2, 0, 0)] == [(40.0, 30.0, False, False)]
    assert found[(EDGE, 1, 12, NONE)] == [(30.0, 30.0, False, False)]
    assert len(join) == 0 and join.orphans == 0 and join.dropped == 0


def test_spans_of_one_trace_join_across_batches_in_any_order():
    spans = three_hop_trace()
    join = TraceJoin(ComponentTable())
    join.add(batch(spans[4], spans[3]))  # the deepest ones first, as services export independently
    # route 2 ended: it counts for its route, its pod and (its parent being done) its database
    # call; it stays, as the call into it has not arrived yet
    early = rows_of(join, join.advance(T0 + 58 * MS))
    assert set(early) == {(ROUTE, 2, 0, 0), (POD, 6, 0, 0), (EDGE, 2, 11, NONE)} and len(join) == 1
    join.add(batch(spans[0]))
    assert len(join.advance(T0 + 65 * MS)) == 0  # the gateway ended later: not yet
    join.add(batch(spans[1], spans[2]))
    found = rows_of(join, join.advance(T0 + 500 * MS))
    assert found[(ROUTE, 1, 0, 0)] == [(100.0, 40.0, False, False)]
    assert found[(EDGE, 1, 10, 2)] == [(50.0, 10.0, False, False)]
    assert len(join) == 0


def test_a_call_under_an_internal_span_sent_in_another_request_still_names_its_calling_route():
    """The database call (span 5) was made inside an INTERNAL span (40) of route 2: decode
    re-parents within a request; here the INTERNAL span came in the next request, with
    route 2, and the join looks through it."""
    spans = three_hop_trace()
    call = dict(spans[4], parent=40)
    join = TraceJoin(ComponentTable())
    join.add(batch(spans[0], spans[1], spans[2], call))
    assert (EDGE, 2, 11, NONE) not in rows_of(join, join.advance(T0 + 32 * MS))
    later = batch(spans[3])
    later.internal = InternalSpans(np.array([7], np.uint64), np.array([40], np.uint64), np.array([4], np.uint64))
    join.add(later)
    found = rows_of(join, join.advance(T0 + 200 * MS))
    assert found[(EDGE, 2, 11, NONE)] == [(10.0, 10.0, False, False)]
    assert join.orphans == 0 and len(join.internal) == 1


def test_internal_links_fill_their_fixed_columns_then_keep_the_newest():
    """Links to INTERNAL parents live in columns of 2 x limit: a full buffer settles early
    (what the next settle would keep anyway: the newest `limit`), and lookups see the settled ones."""
    from otel_ai.decode.columns import span_keys
    from otel_ai.graph.join import _InternalLinks

    links = _InternalLinks(limit=4)
    columns = links.nbytes()

    def arriving(first: int, n: int, end_ms: int) -> SpanBatch:
        carrier = batch(dict(trace=1, span=1, parent=0, kind=SERVER, subject=1, start=0, end=end_ms))
        carrier.max_end_ns = T0 + end_ms * MS
        ids = np.arange(first, first + n, dtype=np.uint64)
        carrier.internal = InternalSpans(np.full(n, 7, np.uint64), ids, ids + np.uint64(1000))
        return carrier

    def key(span: int) -> int:
        return int(span_keys(np.array([7], np.uint64), np.array([span], np.uint64))[0])

    for k in range(12):  # one link a batch, into room for 8: the 9th settles early
        links.add(arriving(10 + k, 1, end_ms=k), now_ns=0)
        assert len(links) <= 8
    links.settle(oldest_ns=0)
    assert len(links) == 4 and links.nbytes() == columns and links.lost == 0
    assert sorted(int(k) for k in links.keys) == sorted(key(span) for span in range(18, 22))  # the newest
    assert np.all(links.keys[:-1] <= links.keys[1:])  # sorted: what through() searches
    assert int(links.through(np.array([key(21)], np.uint64))[0]) == key(1021)
    links.add(arriving(100, 20, end_ms=20), now_ns=0)  # more than the room at once: the rest is counted lost
    assert len(links) == 8 and links.lost == 16


def test_error_origin_is_the_deepest_failing_span_whose_children_succeeded():
    join = TraceJoin(ComponentTable())
    join.add(batch(*three_hop_trace(trace=1, leaf_fails=True), *three_hop_trace(trace=2, own_fails=True)))
    found = rows_of(join, join.advance(T0 + 200 * MS))
    # trace 1: the database call failed and everything above failed because of it
    assert (10.0, 10.0, True, True) in found[(EDGE, 2, 11, NONE)]
    # trace 2: route 2 failed on its own (its database call was fine)
    assert (40.0, 30.0, True, True) in found[(ROUTE, 2, 0, 0)]
    assert (40.0, 30.0, True, False) in found[(ROUTE, 2, 0, 0)]
    for key in ((ROUTE, 1, 0, 0), (EDGE, 1, 10, 2)):
        assert [origin for *_, origin in found[key]] == [False, False]


def test_a_span_whose_parent_never_comes_counts_with_its_service_after_the_wait():
    join = TraceJoin(ComponentTable(), orphan_wait_ns=20_000 * MS)
    join.add(batch(dict(trace=3, span=9, parent=77, kind=CLIENT, subject=10, service=2, resource=7, start=0, end=5)))
    assert len(join.advance(T0 + 1_000 * MS)) == 0 and len(join) == 1
    found = rows_of(join, join.advance(T0 + 30_000 * MS))
    assert found == {(EDGE, SERVICE_FLAG | 2, 10, NONE): [(5.0, 5.0, False, False)]}
    assert join.orphans == 1 and len(join) == 0


def test_same_span_ids_in_different_traces_do_not_mix():
    join = TraceJoin(ComponentTable())
    a = three_hop_trace(trace=1)
    b = [dict(s, trace=2) for s in three_hop_trace()]
    b[4]["end"] = 50  # trace 2's database call is slower
    join.add(batch(*a, *b))
    found = rows_of(join, join.advance(T0 + 200 * MS))
    assert sorted(found[(EDGE, 2, 11, NONE)]) == [(10.0, 10.0, False, False), (30.0, 30.0, False, False)]
    assert sorted(found[(ROUTE, 2, 0, 0)]) == [(40.0, 10.0, False, False), (40.0, 30.0, False, False)]


def test_join_memory_is_capped_whatever_arrives():
    join = TraceJoin(ComponentTable(), max_spans=1_000)
    for t in range(30):  # 3,000 spans ending in the future: nothing can be finalised
        join.add(batch(*[dict(trace=t * 1000 + i, span=1, parent=5, kind=SERVER, subject=1, start=0, end=10_000 + t)
                         for i in range(100)]))
    assert len(join) <= 1_000 and join.level >= 2 and join.dropped == 0
    assert len(join) + join.sampled_out == 3_000
    assert join.nbytes() <= 1_000 * (66 + 6)  # rows; links to INTERNAL parents: 2 x max_spans / 8 of 24 bytes
    # what is kept stands for what is not: each kept span weighs 2**level
    assert set(join._rows.weight.tolist()) == {float(2 ** join.level)}
    assert abs(float(join._rows.weight.sum()) - 3_000) < 0.25 * 3_000


def test_past_the_cap_the_join_keeps_whole_traces_and_weighs_them_for_the_rest():
    rng = np.random.default_rng(3)
    join = TraceJoin(ComponentTable(), max_spans=1_000)
    traces = rng.permutation(1_000) + 1
    for part in np.array_split(traces, 17):  # 4 spans per trace, a trace's spans in two batches
        first = [dict(trace=int(t), span=s, parent=s - 1, kind=SERVER, subject=s, start=0, end=10_000 + s)
                 for t in part for s in (2, 3)]
        join.add(batch(*first))
        join.add(batch(*[dict(trace=int(t), span=s, parent=s - 1, kind=SERVER, subject=s, start=0,
                              end=10_000 + s) for t in part for s in (4, 5)]))
    assert 0 < len(join) <= 1_000 and join.level >= 2 and join.dropped == 0
    # exactly the traces the level keeps, each whole: all four of its spans
    from otel_ai.decode.columns import span_keys
    from otel_ai.graph.join import sampled_in, trace_sample_bits
    ids = traces.astype(np.uint64)
    kept = ids[sampled_in(trace_sample_bits(ids), join.level)]
    wanted = {int(k) for s in (2, 3, 4, 5) for k in span_keys(kept, np.full(kept.shape[0], s, np.uint64)).tolist()}
    assert set(join._rows.skey.tolist()) == wanted and len(join) == 4 * kept.shape[0]
    assert abs(float(join._rows.weight.sum()) - 4_000) < 0.3 * 4_000


def test_the_sampling_level_comes_down_when_traffic_does():
    join = TraceJoin(ComponentTable(), max_spans=1_000)
    join.add(batch(*[dict(trace=i + 1, span=1, parent=0, kind=SERVER, subject=1, start=0, end=10 + i % 50)
                     for i in range(4_000)]))
    raised = join.level
    assert raised >= 3
    t = 100
    for _ in range(raised):  # quiet slots: 100 spans each, under a quarter of the cap
        join.add(batch(*[dict(trace=t * 1000 + i, span=1, parent=0, kind=SERVER, subject=1, start=0, end=t)
                         for i in range(100)]))
        join.advance(T0 + (t + 1) * MS)
        t += 1
    join.advance(T0 + (t + 1) * MS)
    assert join.level == 0
    join.add(batch(*[dict(trace=7_000_000 + i, span=1, parent=0, kind=SERVER, subject=1, start=0, end=t + 1)
                     for i in range(100)]))
    obs = join.advance(T0 + (t + 5) * MS)
    assert len(obs) == 200 and set(obs.weight.tolist()) == {1.0}  # all kept again (route and pod), each for itself


def test_weights_and_edges_keyed_by_service_when_the_parent_is_not_a_server_span():
    join = TraceJoin(ComponentTable())
    join.add(batch(
        dict(trace=4, span=1, parent=0, kind=CLIENT, subject=10, service=1, start=0, end=20, weight=4.0),
        dict(trace=4, span=2, parent=1, kind=CLIENT, subject=11, service=1, start=5, end=10, weight=4.0),
    ))
    obs = join.advance(T0 + 100 * MS)
    found = rows_of(join, obs)
    assert found[(EDGE, SERVICE_FLAG | 1, 10, NONE)] == [(20.0, 15.0, False, False)]  # a root CLIENT span (a job)
    assert found[(EDGE, SERVICE_FLAG | 1, 11, NONE)] == [(5.0, 5.0, False, False)]
    assert obs.weight.tolist() == [4.0, 4.0]


# ----------------------------------------------------------------------------- components

def test_component_table_interns_per_distinct_key_and_overflows_past_its_cap():
    table = ComponentTable(max_components=3)
    ids = table.ids(route_keys(np.array([4, 9, 4, 9, 4])))
    assert ids.tolist() == [1, 2, 1, 2, 1]
    more = table.ids(np.concatenate((route_keys(np.array([9])), edge_keys(np.array([4]), np.array([0]), np.array([10]),
                                                                           np.array([-1])))))
    assert more.tolist() == [2, OVERFLOW] and table.overflowed == 1 and len(table) == 3
    kind, a, b, c = table.fields()
    assert kind.tolist() == [0, ROUTE, ROUTE] and a.tolist() == [0, 4, 9]
    assert table.ids(route_keys(np.array([1 << 21]))).tolist() == [OVERFLOW]  # ids past 20 bits share NONE


# ----------------------------------------------------------------------------- stats

def observations(component: list[int], slot: list[int], total: list[float], own: list[float], error=None, origin=None):
    from otel_ai.graph.join import Observations

    n = len(component)
    return Observations(np.array(component, np.int32), T0 + np.array(slot, np.int64) * SLOT + 1,
                        np.array(total, float), np.array(own, float), np.array(error or [False] * n),
                        np.array(origin or [False] * n), np.ones(n, np.float32))


def test_stats_sum_recent_slots_and_learn_each_slot_as_it_leaves_the_ring():
    stats = ComponentStats(SLOT)
    first = T0 // SLOT
    stats.add(observations([1, 1, 2], [0, 0, 0], [10.0, 30.0, 5.0], [4.0, 6.0, 5.0], error=[False, True, False],
                           origin=[False, True, False]))
    stats.add(observations([1], [1], [50.0], [50.0]))
    now = stats.window(first + 1, 2)
    assert now[1, COUNT] == 3 and now[1, TOTAL] == 90.0 and now[1, SELF] == 60.0
    assert now[1, ERRORS] == 1 and now[1, ORIGINS] == 1 and now[2, COUNT] == 1
    assert stats.window(first + 1, 1)[1, COUNT] == 1
    assert stats.baseline[1, COUNT] == 0  # nothing is normal yet
    stats.roll_to(first + RECENT_SLOTS)  # slot 0 leaves the ring
    assert stats.baseline[1, COUNT] == 2 and stats.baseline[1, TOTAL] == 40.0
    stats.frozen = True
    stats.roll_to(first + RECENT_SLOTS + 1)  # slot 1 leaves while frozen: not learnt
    assert stats.baseline[1, COUNT] == 2
    stats.add(observations([1], [0], [1.0], [1.0]))  # long gone
    assert stats.late == 1


def test_stats_of_absurdly_long_spans_stay_finite():
    """Found by the decoder fuzzer: spans of ~1e13 ms (uint64 timestamps), weighted and
    squared into the float32 ring, made cells inf; the baseline learnt from them would turn nan."""
    stats = ComponentStats(SLOT)
    first = T0 // SLOT
    huge = observations([1] * 4, [0] * 4, [1.8e13] * 4, [1.8e13] * 4)
    huge.weight[:] = 1e15  # a sampled span's adjusted count, also from the wire
    stats.add(huge)
    stats.add(huge)
    assert np.isfinite(stats.window(first, 1)).all()
    stats.roll_to(first + RECENT_SLOTS)
    assert np.isfinite(stats.baseline).all()


def test_stats_after_a_long_gap_decay_instead_of_replaying_empty_slots():
    stats = ComponentStats(SLOT)
    first = T0 // SLOT
    stats.add(observations([1], [0], [10.0], [10.0]))
    stats.roll_to(first + RECENT_SLOTS)
    assert stats.baseline[1, COUNT] == 1.0
    stats.roll_to(first + 10_000)  # a day without data
    assert 0 < stats.baseline[1, COUNT] < 0.1
    assert stats.window(first + 10_000, RECENT_SLOTS)[1, COUNT] == 0
    assert stats.nbytes() == stats.rows * (RECENT_SLOTS * 4 + 8) * 7


@pytest.mark.parametrize("slots", [1, 3, RECENT_SLOTS])
def test_window_never_reaches_outside_the_ring(slots):
    stats = ComponentStats(SLOT)
    first = T0 // SLOT
    for s in range(RECENT_SLOTS + 4):
        stats.add(observations([1], [s], [1.0], [1.0]))
    assert stats.window(first + RECENT_SLOTS + 3, slots)[1, COUNT] == slots


# ----------------------------------------------------------------------------- memory

def in_flight_traces(first: int, traces: int, routes: int, end_ms: int) -> SpanBatch:
    """`traces` 6-span traces (gateway -> api -> leaf, each with its client call), spread
    over `routes` route subjects, all ending after end_ms: none is complete yet."""
    hop = np.arange(6)
    trace = np.repeat(np.arange(first, first + traces, dtype=np.uint64), 6)
    kind = np.tile(np.where(hop % 2 == 0, SERVER, CLIENT), traces).astype(np.int8)
    route = (np.arange(first, first + traces) * 3) % routes + 1
    subject = np.where(kind == SERVER, np.repeat(route, 6) + np.tile(hop // 2, traces), routes + 1 + np.tile(hop, traces))
    start = T0 + (end_ms + np.tile(hop, traces)) * MS
    end = start + (100 - np.tile(hop, traces) * 10) * MS
    return SpanBatch(
        subject_id=subject.astype(np.int32), end_ns=end, duration_ms=(end - start) / 1e6,
        error=np.zeros(trace.shape[0], bool), client_error=np.zeros(trace.shape[0], bool), kind=kind,
        service_id=np.tile(hop // 2, traces).astype(np.int32), resource_id=np.tile(hop // 2 + 1, traces).astype(np.int32),
        start_ns=start, weight=np.ones(trace.shape[0], np.float32), trace_key=trace,
        span_id=np.tile(hop + 1, traces).astype(np.uint64), parent_span_id=np.tile(hop, traces).astype(np.uint64),
    )


def test_100k_traces_in_flight_over_10k_routes_stay_within_the_caps():
    from otel_ai.graph.join import MAX_SPANS
    from otel_ai.graph.service_graph import ServiceGraph
    from otel_ai.graph.components import MAX_COMPONENTS
    from otel_ai.resources import ResourceTable
    from otel_ai.subjects import SubjectTable

    graph = ServiceGraph(SLOT, SubjectTable(), ResourceTable())
    join_cap = MAX_SPANS * (66 + 6)  # rows, and links to INTERNAL parents (2 x MAX_SPANS / 8 of 24 bytes)
    stats_cap = MAX_COMPONENTS * (RECENT_SLOTS * 4 + 8) * 7
    for first in range(0, 100_000, 10_000):
        graph.add(in_flight_traces(first, 10_000, 10_000, end_ms=60_000))
    graph.close_slot(T0 // SLOT)  # nothing has ended yet: all 600,000 spans wait
    assert len(graph.join) == 600_000 and graph.join.nbytes() <= join_cap
    for first in range(100_000, 200_000, 10_000):  # 100k more: past the cap, one trace in two stays
        graph.add(in_flight_traces(first, 10_000, 10_000, end_ms=61_000))
    assert len(graph.join) <= MAX_SPANS and graph.join.level == 1 and graph.join.dropped == 0
    assert len(graph.join) + graph.join.sampled_out == 1_200_000
    assert graph.join.nbytes() <= join_cap
    graph.close_slot(T0 // SLOT + 100)  # everything ends: joined, counted, released
    assert len(graph.join) == 0
    assert 40_000 <= len(graph.components) <= MAX_COMPONENTS and graph.components.overflowed == 0
    assert graph.stats.nbytes() <= stats_cap and graph.components.nbytes() <= MAX_COMPONENTS * 130
    print(f"\njoin cap {join_cap / 2**20:.0f} MiB, stats cap {stats_cap / 2**20:.1f} MiB; "
          f"state after 200k traces over 10k routes: {graph.nbytes() / 2**20:.1f} MiB, "
          f"{len(graph.components)} components")


def test_baselines_survive_a_restart_by_name():
    from otel_ai.decode import Decoder
    from otel_ai.graph.localize import LATENCY, Start, localize
    from otel_ai.graph.service_graph import ServiceGraph
    from otel_ai.subjects import SubjectTable
    from otel_ai.testing.harness import run_graph
    from otel_ai.testing.scenarios import deep_scenario

    before = run_graph(deep_scenario("network_delay", seed=1, warmup_s=200.0, rate_scale=0.3), 190.0)
    saved = before.graph.state()
    assert saved and {entry["component"][0] for entry in saved} == {"route", "edge"}
    # A new process: other ids (a subject interned first), the same names.
    subjects = SubjectTable()
    subjects.dependency("interned-first")
    fresh = ServiceGraph(before.graph.slot_ns, subjects, Decoder(subjects).resources)
    assert fresh.restore(saved) == len(saved)
    again = {json_key(e["component"]): e["sums"] for e in fresh.state()}
    assert again == {json_key(e["component"]): e["sums"] for e in saved}
    # What the restored baseline knows is what localisation compares with.
    route = subjects.route("web-gateway", "GET", "/api/search")
    snapshot = fresh.snapshot(0, 1)
    component = fresh.components.id_of(int(route_keys(np.array([route]))[0]))
    assert snapshot.base[component, COUNT] > 0
    assert localize(snapshot, [Start(route, LATENCY)]) == []  # nothing now: nothing changed


def json_key(name) -> str:
    import json

    return json.dumps(name)


def test_the_graph_stops_learning_for_a_young_incident_and_resumes_after_an_hour(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from otel_ai.config import load_settings
    from otel_ai.model import ROUTE as ROUTE_KIND, SYSTEM, Subject
    from otel_ai.pipeline import GRAPH_FREEZE_MAX_S, Pipeline
    from otel_ai.store import IncidentStore

    pipeline = Pipeline(load_settings(env={}), IncidentStore(tmp_path / "store.db"), [], use_wall_clock=False)
    slot = 200_000_000
    slot_end_ns = (slot + 1) * pipeline.slot_ns
    open_incidents = []
    monkeypatch.setattr(pipeline.incidents, "watched", lambda: open_incidents)

    def frozen_after(opened_ago_s: float, kind: str = ROUTE_KIND) -> bool:
        open_incidents[:] = [SimpleNamespace(subject=Subject(kind, "svc", "GET", "/x"),
                                             opened_at_ns=slot_end_ns - int(opened_ago_s * 1e9))]
        pipeline._close_graph_slot(slot)
        return pipeline.graph.stats.frozen

    assert frozen_after(60.0)
    assert not frozen_after(GRAPH_FREEZE_MAX_S + 10.0)  # a route broken for hours: the rest learns again
    assert not frozen_after(60.0, SYSTEM)  # the AI budget's own alert is no fault in the graph
    open_incidents.clear()
    pipeline._close_graph_slot(slot)
    assert not pipeline.graph.stats.frozen


def test_the_pipeline_reports_the_share_of_traces_the_join_keeps(tmp_path):
    from otel_ai.config import load_settings
    from otel_ai.pipeline import Pipeline
    from otel_ai.store import IncidentStore
    from otel_ai.testing.scenarios import scenario

    pipeline = Pipeline(load_settings(env={}), IncidentStore(tmp_path / "i.db"), [], use_wall_clock=False)
    gauge = lambda: pipeline.metrics.registry.get_sample_value("otel_ai_graph_traces_kept_ratio")  # noqa: E731
    assert gauge() == 1.0
    pipeline.graph.join = TraceJoin(pipeline.graph.components, max_spans=300)  # far below this traffic
    for body in scenario("dependency_errors", seed=3, warmup_s=5, rate_scale=0.3).serialized_batches(40, 1.0):
        pipeline.feed(body)
    assert pipeline.graph.join.level >= 1 and pipeline.ticks > 0
    assert gauge() < 1.0 and gauge() in {1.0 / 2 ** level for level in range(1, 17)}  # as at the last slot close


@pytest.mark.parametrize("seed", range(6))
def test_parent_rows_are_found_alike_in_c_and_numpy(seed, monkeypatch):
    from otel_ai.decode import native
    from otel_ai.graph import join as join_module

    if not native.available():
        pytest.skip("the C extension is not built")
    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 7, 1000, 50_000]))
    keys = rng.integers(1, max(2, n // 3) if seed % 2 else 2**62, n, dtype=np.int64).astype(np.uint64)  # duplicates
    queries = np.concatenate((keys[rng.integers(0, max(n, 1), n)] if n else keys,
                              rng.integers(1, 2**62, 500, dtype=np.int64).astype(np.uint64), np.zeros(3, np.uint64)))
    found = join_module.row_of(keys, queries, 0x1234567 | 1)
    monkeypatch.setattr(native, "_otlp", None)
    assert np.array_equal(found, join_module.row_of(keys, queries, 7))
    hit = found >= 0
    assert np.array_equal(keys[found[hit]], queries[hit])
    if n:  # the first of equal keys
        assert all(found[k] == int(np.flatnonzero(keys == queries[k])[0]) for k in np.flatnonzero(hit)[:200])
