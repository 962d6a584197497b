"""Suspects when there are no good requests left: the bad ones are compared with the same
subject's requests from before the onset."""
from __future__ import annotations

from otel_ai.decode import Capture
from otel_ai.model import Anomaly, Subject
from otel_ai.suspects import HISTORY_RING, HISTORY_SPACING_NS, CaptureStore, onset_ns, rank_suspects

NS = 1_000_000_000
T0 = 1_771_164_000 * NS
ONSET = T0 + 600 * NS
SUBJECT = Subject("route", "config-service", "GET", "/config/fares")
PODS = ("config-7d9-a", "config-7d9-b", "config-7d9-c")


def capture(i: int, end_ns: int, slow: bool, sampled: bool = True) -> Capture:
    k = i // 2  # the request: traffic() numbers two captures per second
    pairs = [("service.version", "0.8.3"), ("k8s.pod.name", PODS[k % 3]), ("k8s.node.name", f"node-{k % 2}")]
    if slow:
        pairs.append(("dependency.slow", "config-db"))
    return Capture(1, end_ns, 650.0 if slow else 5.0, False, slow, sampled, i.to_bytes(16, "big"), tuple(pairs), ())


def latency_anomaly(event_ns: int) -> Anomaly:
    # p95 per 10 s slot over the last 2 minutes: normal until the onset, then 650 ms
    samples = [(t, 650.0 if t > ONSET else 9.0) for t in range(event_ns - 110 * NS, event_ns + 1, 10 * NS)]
    return Anomaly("LATENCY_ANOMALY", "critical", 1, SUBJECT, "latency_p95", "ms", 650.0, 100.0, 9.0, "1m", 6.5,
                   "rising", 0.9, {}, samples, 400, 400, event_ns, "slow", slow_threshold_ms=100.0)


def traffic(store: CaptureStore, until_ns: int) -> None:
    """A sampled request every second, fast before the onset, all slow after it (the slow
    database sits behind every request), plus the slow captures of unsampled requests."""
    i = 0
    for t in range(T0, until_ns, NS):
        slow = t >= ONSET
        store.add([capture(i, t, slow)] + ([capture(i + 1, t + NS // 2, True, sampled=False)] if slow else []))
        i += 2


def test_a_fault_behind_every_request_is_ranked_against_the_past():
    store = CaptureStore()
    event = ONSET + 400 * NS  # past the 5-minute lookback: no good request is left in it
    traffic(store, event)
    found = store.attribute(latency_anomaly(event))
    assert found.compared_with == "before_onset" and found.good_requests >= 60
    top = found.suspects[0]
    assert (top["key"], top["value"], top["score"]) == ("dependency.slow", "config-db", 1.0)
    assert top["good_share"] == 0.0 and top["compared_with"] == "before_onset"
    # the version that ran all along, and pods and nodes in their usual shares: nothing
    assert [s["key"] for s in found.suspects] == ["dependency.slow"]


def test_the_running_version_scores_zero_whatever_its_share():
    bad = [capture(i, ONSET + i, True) for i in range(90)]
    before = [capture(i, T0 + i, False) for i in range(60)]
    scores = {(k, v): s for (k, v), s in _all_scores(bad, before).items()}
    assert scores[("service.version", "0.8.3")] == 0.0
    assert scores[("dependency.slow", "config-db")] == 1.0
    assert all(abs(s) < 0.1 for (k, _), s in scores.items() if k in ("k8s.pod.name", "k8s.node.name"))
    assert rank_suspects(bad, before)[0]["value"] == "config-db"


def _all_scores(bad, good) -> dict:
    from collections import Counter

    b, g = Counter(p for c in bad for p in set(c.pairs)), Counter(p for c in good for p in set(c.pairs))
    return {pair: round(b[pair] / len(bad) - g[pair] / len(good), 2) for pair in b}


def test_with_good_requests_left_the_comparison_is_unchanged():
    store = CaptureStore()
    event = ONSET + 30 * NS  # good requests from before the onset are still in the lookback
    traffic(store, event)
    found = store.attribute(latency_anomaly(event))
    assert found.compared_with == "good" and found.good_requests >= 100
    assert found.suspects[0]["key"] == "dependency.slow" and "compared_with" not in found.suspects[0]


def test_too_little_history_keeps_the_window_comparison():
    store = CaptureStore()
    store.add([capture(i, ONSET + i * NS, True) for i in range(40)])
    found = store.attribute(latency_anomaly(ONSET + 60 * NS))
    assert found.compared_with == "good" and found.good_requests == 0
    assert found.suspects[0]["score"] == 1.0  # nothing to compare with: every pair of the bad ones


def test_history_is_sparse_and_bounded():
    store = CaptureStore()
    store.add([capture(i, T0 + i * NS // 10, False) for i in range(36_000)])  # an hour at 10 sampled/s
    history = store.held(1)["history"]
    assert len(history) == HISTORY_RING
    ends = [c.end_ns for c in history]
    assert min(b - a for a, b in zip(ends, ends[1:])) >= HISTORY_SPACING_NS
    assert (ends[-1] - ends[0]) / NS >= 600  # ~10 minutes back


def test_onset_is_the_start_of_the_first_breaching_slot_or_after_the_last_good_request():
    anomaly = latency_anomaly(ONSET + 60 * NS)
    assert onset_ns(anomaly, [ONSET + 30 * NS]) == ONSET
    # breaching for longer than the recent samples reach back: just after the last good request
    late = latency_anomaly(ONSET + 400 * NS)
    assert onset_ns(late, [T0, ONSET - NS]) == ONSET - NS + 1
    assert onset_ns(late, []) == late.recent_samples[0][0] - 10 * NS
    anomaly.recent_samples = [(ONSET + 10 * NS, 50.0)]
    assert onset_ns(anomaly, []) == anomaly.event_time_ns


def test_shares_count_the_requests_each_capture_stands_for() -> None:
    """Two pods serve 1,000 requests each. Pod a fails 5 % and is sampled at 10 %, pod b
    fails 50 % and is sampled at 1 %: the captures are 5 bad and 95 good of a, 5 and 5 of
    b. Weighted by what each capture stands for, the shares are those of the requests
    (b has 500 of the 550 failing requests), not of the kept spans (5 of 10)."""
    def request(i: int, pod: str, weight: float) -> Capture:
        return Capture(1, T0 + i, 5.0, False, False, True, i.to_bytes(16, "big"), (("k8s.pod.name", pod),), (),
                       weight=weight)

    bad = [request(i, "a", 10.0) for i in range(5)] + [request(10 + i, "b", 100.0) for i in range(5)]
    good = [request(100 + i, "a", 10.0) for i in range(95)] + [request(300 + i, "b", 100.0) for i in range(5)]
    (top,) = rank_suspects(bad, good)
    assert (top["key"], top["value"]) == ("k8s.pod.name", "b")
    assert top["bad_share"] == round(500 / 550, 3) and top["good_share"] == round(500 / 1450, 3)


def test_the_capture_budget_drops_the_least_recently_active_subjects():
    store = CaptureStore(max_captures=100)
    for subject in range(10):  # 20 errors each: the budget holds five subjects
        store.add([Capture(subject, T0 + i, 5.0, True, False, False, bytes(16), (), ()) for i in range(20)])
        assert store.captures <= 100
    assert store.captures == 100
    assert sorted(store._subjects) == [5, 6, 7, 8, 9]
    store.add([Capture(5, T0 + 99, 5.0, True, False, False, bytes(16), (), ())])  # active again: 6 goes
    assert sorted(store._subjects) == [5, 7, 8, 9]
    store.add([Capture(10, T0 + i, 5.0, True, False, False, bytes(16), (), ()) for i in range(20)])
    assert sorted(store._subjects) == [5, 8, 9, 10]
    assert store.captures == sum(entry.count() for entry in store._subjects.values()) == 81
