"""The child index: a request's recent client calls by (trace key, service), in a ring
of calls allocated at start."""
from __future__ import annotations

from otel_ai.decode.child_index import MAX_CALLS_PER_KEY, ChildIndex


def test_a_keys_calls_come_back_oldest_first_and_other_keys_stay_apart():
    index = ChildIndex(max_calls=16)
    index.add(7, "checkout", "postgres", False, 12.5, ())
    index.add(7, "cart", "redis", False, 1.0, ())  # the same trace, another service
    index.add(7, "checkout", "payments", True, 300.0, (("Timeout", "read timed out"),))
    assert index.get(7, "checkout") == [("postgres", False, 12.5, ()),
                                        ("payments", True, 300.0, (("Timeout", "read timed out"),))]
    assert index.get(7, "cart") == [("redis", False, 1.0, ())]
    assert index.get(8, "checkout") == []


def test_the_first_calls_of_a_key_are_kept_up_to_its_cap():
    index = ChildIndex(max_calls=256)
    for i in range(MAX_CALLS_PER_KEY + 10):
        index.add(1, "api", f"dep-{i}", False, 1.0, ())
    assert [dep for dep, *_ in index.get(1, "api")] == [f"dep-{i}" for i in range(MAX_CALLS_PER_KEY)]


def test_the_ring_writes_over_the_oldest_calls_and_forgets_their_keys():
    index = ChildIndex(max_calls=8)
    index.add(1, "api", "db", False, 1.0, ())
    index.add(1, "api", "cache", False, 2.0, ())
    for trace in range(2, 9):  # seven more calls: the first of trace 1 is written over
        index.add(trace, "api", "db", False, 3.0, ())
    assert index.get(1, "api") == [("cache", False, 2.0, ())]  # its chain ends at the lost call
    index.add(9, "api", "db", False, 3.0, ())  # trace 1's last call goes too
    assert index.get(1, "api") == [] and len(index) == 8
    for trace in range(10, 100):
        index.add(trace, "api", "db", False, 3.0, ())
    assert len(index) == 8  # one key per held call at most: bounded
