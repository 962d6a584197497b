"""The child index: a request's recent client calls by (trace key, service), in a ring
of calls allocated at start."""
from __future__ import annotations

from otel_ai.decode.child_index import MAX_CALLS_PER_KEY, ChildIndex

MS = 1_000_000
T0 = 1_771_164_000 * 1_000_000_000
ALL = (T0, T0 + 10_000 * MS)  # a request long enough to hold every call below


def test_a_keys_calls_come_back_oldest_first_and_other_keys_stay_apart():
    index = ChildIndex(max_calls=16)
    index.add(7, "checkout", "postgres", False, 12.5, (), T0 + 20 * MS)
    index.add(7, "cart", "redis", False, 1.0, (), T0 + 21 * MS)  # the same trace, another service
    index.add(7, "checkout", "payments", True, 300.0, (("Timeout", "read timed out"),), T0 + 330 * MS)
    assert index.get(7, "checkout", *ALL) == [("postgres", False, 12.5, ()),
                                              ("payments", True, 300.0, (("Timeout", "read timed out"),))]
    assert index.get(7, "cart", *ALL) == [("redis", False, 1.0, ())]
    assert index.get(8, "checkout", *ALL) == []


def test_a_request_gets_only_the_calls_that_ended_within_it():
    index = ChildIndex(max_calls=16)
    index.add(7, "checkout", "postgres", False, 5.0, (), T0 + 10 * MS)  # an earlier request of the trace
    index.add(7, "checkout", "payments", False, 5.0, (), T0 + 110 * MS)  # this one's
    index.add(7, "checkout", "postgres", False, 5.0, (), T0 + 260 * MS)  # a later one's
    assert index.get(7, "checkout", T0 + 100 * MS, T0 + 200 * MS) == [("payments", False, 5.0, ())]
    assert [dep for dep, *_ in index.get(7, "checkout", T0, T0 + 300 * MS)] == ["postgres", "payments", "postgres"]


def test_the_first_calls_of_a_key_are_kept_up_to_its_cap():
    index = ChildIndex(max_calls=256)
    for i in range(MAX_CALLS_PER_KEY + 10):
        index.add(1, "api", f"dep-{i}", False, 1.0, (), T0 + i * MS)
    assert [dep for dep, *_ in index.get(1, "api", *ALL)] == [f"dep-{i}" for i in range(MAX_CALLS_PER_KEY)]


def test_the_ring_writes_over_the_oldest_calls_and_forgets_their_keys():
    index = ChildIndex(max_calls=8)
    index.add(1, "api", "db", False, 1.0, (), T0 + MS)
    index.add(1, "api", "cache", False, 2.0, (), T0 + 2 * MS)
    for trace in range(2, 9):  # seven more calls: the first of trace 1 is written over
        index.add(trace, "api", "db", False, 3.0, (), T0 + 3 * MS)
    assert index.get(1, "api", *ALL) == [("cache", False, 2.0, ())]  # its chain ends at the lost call
    index.add(9, "api", "db", False, 3.0, (), T0 + 3 * MS)  # trace 1's last call goes too
    assert index.get(1, "api", *ALL) == [] and len(index) == 8
    for trace in range(10, 100):
        index.add(trace, "api", "db", False, 3.0, (), T0 + 3 * MS)
    assert len(index) == 8  # one key per held call at most: bounded
