"""The deep topology and its faults, bursty noise and daily swing, measured from the spans
the generator produces (the way a root-cause search would see them); plus a guard that
the shop's output stays byte-for-byte what it was."""
from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict

import pytest

from otel_ai.testing import deep_topology as deep
from otel_ai.testing.scenarios import DEEP_SCENARIOS, deep_background_noise, deep_benign_noise, deep_scenario, scenario
from otel_ai.testing.traffic import DEFAULT_START_NS, Fault, Noise, TrafficGenerator
from test_traffic_generator import CLIENT, ERROR, NS, SERVER, collect, err_share, servers

ONSET = 12


def _split(recs, onset_s=ONSET, settle_s=1):
    t = DEFAULT_START_NS + onset_s * NS
    return [r for r in recs if r.start < t], [r for r in recs if r.start >= t + settle_s * NS]


def _self_ms(recs) -> dict[bytes, float]:
    """Duration minus the children's (sequential in the generator) durations, per span id."""
    children = defaultdict(float)
    for r in recs:
        if r.kind in (SERVER, CLIENT):
            children[r.parent] += r.ms
    return {r.span_id: r.ms - children[r.span_id] for r in recs}


def _callee_service(r) -> str:
    return r.attrs.get("peer.service", "")


# ----------------------------------------------------------------------------- the shop stays put

def test_shop_output_is_unchanged():
    # sha256 of the default shop's first 30 s and of a fault preset, recorded before the deep
    # topology was added: other tests and the detection evals depend on these bytes
    digest = hashlib.sha256()
    for blob in TrafficGenerator(seed=5).serialized_batches(30):
        digest.update(blob)
    for blob in scenario("bad_pod", seed=3, warmup_s=10).serialized_batches(20, 2.0):
        digest.update(blob)
    assert digest.hexdigest() == "3c862a669a7e975641c96c0897e0e6810065b1ce3fa647daf84d2299dd854989"


# ----------------------------------------------------------------------------- shape

@pytest.fixture(scope="module")
def calm():
    gen = TrafficGenerator(seed=3, topology="deep")
    return gen, collect(gen, 30)


def test_deep_topology_is_deep_wide_and_has_a_catch_all(calm):
    gen, recs = calm
    assert len({r.service for r in recs}) == len(deep.SERVICES) >= 15
    by_id = {r.span_id: r for r in recs}

    def hops(r) -> int:  # service-to-service hops above this span
        n = 0
        while r.parent in by_id:
            parent = by_id[r.parent]
            n += parent.service != r.service
            r = parent
        return n

    deepest = max(hops(r) for r in servers(recs))
    assert deepest >= 3  # gateway -> search -> route-planner -> timetable (+ its database: 4 hops)
    calls_of = defaultdict(list)
    for r in recs:
        if r.kind == CLIENT:
            calls_of[r.parent].append(r)
    fan_out = Counter(len(calls_of[s.span_id]) for s in servers(recs, ("search-service", "GET", "/search")))
    assert fan_out.most_common(1)[0][0] == 3
    catch_all = servers(recs, ("web-gateway", "GET", "/api/*"))
    picks = Counter()
    for r in catch_all:
        calls = calls_of[r.span_id]
        assert len(calls) == 1 or 400 <= r.code < 500
        picks.update(_callee_service(c) for c in calls)
    total = sum(picks.values())
    assert set(picks) == {"profile-service", "station-service", "booking-service"}
    assert 0.35 < picks["profile-service"] / total < 0.55
    assert gen.ground_truth == []


def test_deep_same_seed_same_bytes():
    a = list(deep_scenario("deep_error", seed=4, warmup_s=2).serialized_batches(4))
    b = list(deep_scenario("deep_error", seed=4, warmup_s=2).serialized_batches(4))
    assert a == b and all(a)


# ----------------------------------------------------------------------------- noise

def test_error_bursts_fail_10_to_30_percent_in_bursts_only():
    route = "station-service:GET /stations"
    gen = TrafficGenerator(seed=5, topology="deep", rate_scale=2.0, noise=[Noise("error_bursts", route=route,
                           params={"every_s": 40.0, "burst_s": (10.0, 20.0)})])
    recs = servers(collect(gen, 150, only={"station-service"}), ("station-service", "GET", "/stations"))
    per_window = defaultdict(list)
    for r in recs:
        per_window[(r.start - DEFAULT_START_NS) // (5 * NS)].append(r)
    shares = [err_share(w) for w in per_window.values() if len(w) >= 40]
    calm_windows = [s for s in shares if s < 0.03]
    burst_windows = [s for s in shares if s >= 0.07]
    assert len(calm_windows) > 8 and len(burst_windows) > 3
    assert max(shares) < 0.45 and statistics.median(burst_windows) > 0.08
    assert gen.ground_truth == []


def test_latency_bursts_slow_a_route_2_to_4x_in_bursts():
    route = "seat-service:GET /seats/availability"
    gen = TrafficGenerator(seed=5, topology="deep", noise=[Noise("latency_bursts", route=route,
                           params={"every_s": 60.0})])
    recs = collect(gen, 240, only={"seat-service"})
    own = _self_ms(recs)
    per_window = defaultdict(list)
    for r in servers(recs, ("seat-service", "GET", "/seats/availability")):
        per_window[(r.start - DEFAULT_START_NS) // (5 * NS)].append(own[r.span_id])
    medians = sorted(statistics.median(v) for v in per_window.values() if len(v) > 20)
    calm_median = medians[len(medians) // 4]
    assert medians[-1] / calm_median > 1.8
    assert medians[0] / calm_median > 0.7


def test_daily_swing_follows_the_time_of_day():
    def entry_count(hour: int) -> int:
        start = DEFAULT_START_NS - 14 * 3600 * NS + hour * 3600 * NS  # DEFAULT_START_NS is 14:00 UTC
        gen = TrafficGenerator(seed=2, topology="deep", start_ns=start, noise=[Noise("daily_swing")])
        return sum(1 for r in collect(gen, 20, only={"web-gateway"}) if r.kind == SERVER)

    peak, trough = entry_count(13), entry_count(1)
    assert 2.3 < peak / trough < 3.8  # 1.5x vs 0.5x of the base rate


def test_deep_benign_noise_has_bursts_swing_4xx_and_surges():
    kinds = Counter(n.kind for n in deep_benign_noise(6 * 3600))
    assert kinds["error_bursts"] == 2 and kinds["latency_bursts"] == 1 and kinds["daily_swing"] == 1
    assert kinds["4xx_burst"] >= 20 and kinds["traffic_surge"] >= 10
    gen = deep_scenario("deep_benign", seed=1, duration_s=1800)
    assert gen.ground_truth == [] and sum(1 for _ in gen.batches(3)) == 3
    assert {n.kind for n in deep_background_noise()} == {"error_bursts", "latency_bursts", "daily_swing"}


def test_bad_deep_fault_and_noise_settings_are_refused():
    with pytest.raises(ValueError, match="unknown pod"):
        TrafficGenerator(topology="deep", faults=[Fault("cpu_contention", 1, target="nope")])
    with pytest.raises(ValueError, match="unknown dependency"):
        TrafficGenerator(topology="deep", faults=[Fault("slow_leaf", 1, target="nope")])
    with pytest.raises(ValueError, match="needs a route"):
        TrafficGenerator(topology="deep", noise=[Noise("error_bursts")])
    with pytest.raises(ValueError, match="unknown topology"):
        TrafficGenerator(topology="flat")
    with pytest.raises(ValueError, match="unknown deep scenario"):
        deep_scenario("bad_pod")


# ----------------------------------------------------------------------------- faults

@pytest.fixture(scope="module")
def faults():
    out = {}
    for name in DEEP_SCENARIOS:
        gen = deep_scenario(name, seed=6, warmup_s=ONSET)
        out[name] = (gen, collect(gen, ONSET + 12))
    return out


def test_every_deep_fault_is_at_least_3_hops_below_an_affected_entry_route(faults):
    for name, (gen, _) in faults.items():
        truth = gen.ground_truth
        assert truth and all(t.root_cause is not None and t.fault == name for t in truth)
        routes = {s for t in truth for s in t.subjects if s[0] == "route"}
        assert any(s[1] == "web-gateway" for s in routes), (name, routes)
    assert faults["network_delay"][0].ground_truth[0].root_cause["service"] == "timetable-service"
    assert faults["slow_leaf"][0].ground_truth[0].root_cause["dependency"] == "config-db"


def test_network_delay_shows_only_on_callers_client_spans(faults):
    gen, recs = faults["network_delay"]
    before, after = _split(recs)

    def med(rs, pred):
        return statistics.median(r.ms for r in rs if pred(r))

    into = lambda r: r.kind == CLIENT and _callee_service(r) == "timetable-service"  # noqa: E731
    served = lambda r: r.kind == SERVER and r.service == "timetable-service"  # noqa: E731
    assert med(after, into) - med(before, into) > 150
    assert abs(med(after, served) - med(before, served)) < 3
    entry = ("web-gateway", "GET", "/api/search")
    assert med(after, lambda r: r.kind == SERVER and r.route == entry) > 3 * med(before, lambda r: r.kind == SERVER and r.route == entry)
    assert ("route", "timetable-service", "GET", "/timetable/departures") not in gen.ground_truth[0].subjects


def test_cpu_contention_grows_one_pods_own_time(faults):
    gen, recs = faults["cpu_contention"]
    pod = gen.faults[0].target
    before, after = _split(recs)
    own_before, own_after = _self_ms(before), _self_ms(after)
    fraud = lambda rs: [r for r in servers(rs) if r.service == "fraud-service"]  # noqa: E731
    mine = statistics.median(own_after[r.span_id] for r in fraud(after) if r.pod == pod)
    others = statistics.median(own_after[r.span_id] for r in fraud(after) if r.pod != pod)
    usual = statistics.median(own_before[r.span_id] for r in fraud(before))
    assert mine > 15 * usual and abs(others - usual) < 0.3 * usual
    assert gen.ground_truth[0].root_cause == {"kind": "pod", "service": "fraud-service", "pod": pod,
                                             "version": gen.pod(pod).version, "dependency": None, "operation": None}


def test_slow_leaf_slows_every_request_of_the_route_behind_it(faults):
    gen, recs = faults["slow_leaf"]
    _, after = _split(recs)
    config = servers(after, ("config-service", "GET", "/config/fares"))
    assert config and min(r.ms for r in config) > 400 and err_share(config) < 0.02
    calls = [r for r in after if r.kind == CLIENT and r.attrs.get("server.address") == "config-db"]
    assert all(400 <= r.ms <= 900 for r in calls)


def test_deep_error_propagates_as_5xx_up_the_chain(faults):
    gen, recs = faults["deep_error"]
    _, after = _split(recs)
    auth = [r for r in servers(after) if r.service == "auth-service"]
    assert 0.2 < err_share(auth) < 0.4
    assert all(r.exc_types == ["IllegalStateError"] for r in auth if r.is_error)
    bookings = servers(after, ("web-gateway", "POST", "/api/bookings"))
    assert 0.15 < err_share(bookings) < 0.45
    assert {r.code for r in bookings if r.is_error} == {502}
    # the chain: every failing booking has a failing auth call three services down
    by_parent = defaultdict(list)
    for r in after:
        by_parent[r.parent].append(r)

    def reaches_failing_auth(r) -> bool:
        if r.service == "auth-service" and r.is_error:
            return True
        return any(reaches_failing_auth(c) for c in by_parent[r.span_id] if c.status == ERROR)

    failing = [r for r in bookings if r.is_error]
    # the rest: bursts of the notification service and the 0.2 % every route fails on its own
    assert sum(map(reaches_failing_auth, failing)) > 0.85 * len(failing)
