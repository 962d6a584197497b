"""The capture store's slots: what goes in reads back as it went in, rings reuse their
own slots, and a full store never allocates beyond the pool made at start."""
from __future__ import annotations

from otel_ai.capture_pool import CapturePool
from otel_ai.decode import Capture
from otel_ai.suspects import BAD_RING, SUBJECT_RING_SLOTS, CaptureStore

NS = 1_000_000_000
T0 = 1_771_164_000 * NS


def error(subject: int, i: int, trace_id: bytes | None = None, span_id: bytes | None = None, **kw) -> Capture:
    return Capture(subject, T0 + i * NS, 5.0 + i, True, False, kw.pop("sampled", False),
                   trace_id if trace_id is not None else i.to_bytes(16, "big"),
                   (("k8s.pod.name", f"pod-{i % 3}"),), (("TimeoutError", "read timed out"),),
                   span_id if span_id is not None else i.to_bytes(8, "big"), **kw)


def test_captures_read_back_as_they_went_in_whatever_their_id_lengths():
    pool = CapturePool(8)
    captures = [error(7, 1), error(7, 2, trace_id=b"", span_id=b"\x01"),
                error(7, 3, trace_id=bytes(range(20)), span_id=bytes(range(9))),  # too long: kept whole
                error(7, 4, trace_id=b"\x00" * 16, marks=("throttled",), weight=32.0)]
    pool.put([3, 0, 5, 6], captures, [10, 11, 12, 13])
    assert pool.load(7, [3, 0, 5, 6], {}) == captures


def test_a_slot_written_twice_in_one_batch_keeps_the_later_capture():
    pool = CapturePool(4)
    first, second = error(1, 1), error(1, 2)
    pool.put([2, 2], [first, second], [0, 1])
    assert pool.load(1, [2], {}) == [second]


def test_a_request_in_two_rings_is_one_capture_when_read():
    store = CaptureStore()
    store.add([error(1, 1, sampled=False), Capture(1, T0, 5.0, False, True, True, bytes(16), (), ())])
    held = store.held(1)
    assert held["slow"][0] is held["sampled"][0]  # the slow request was also sampled


def test_a_full_ring_reuses_its_own_slots():
    store = CaptureStore()
    store.add([error(1, i) for i in range(BAD_RING)])
    free_before = len(store._pool.free)
    store.add([error(1, BAD_RING + i) for i in range(3 * BAD_RING)])  # overflows within the batch
    assert len(store._pool.free) == free_before
    bad = store.held(1)["bad"]
    assert [c.end_ns for c in bad] == [T0 + i * NS for i in range(3 * BAD_RING, 4 * BAD_RING)]
    assert bad == [error(1, i) for i in range(3 * BAD_RING, 4 * BAD_RING)]


def test_a_batch_larger_than_the_free_slots_drops_the_least_recent_subjects_first():
    store = CaptureStore(max_captures=100)
    assert store._pool.size == 100 + SUBJECT_RING_SLOTS
    store.add([error(s, i) for s in range(10) for i in range(20)])  # 200 captures, one batch
    assert store.captures == 100 and sorted(store._subjects) == [5, 6, 7, 8, 9]
    assert len(store._pool.free) == store._pool.size - 100
    assert store.held(9)["bad"] == [error(9, i) for i in range(20)]
    big = [error(s, i) for s in range(100, 100 + 40) for i in range(BAD_RING)]  # far more than the pool
    store.add(big)
    assert store.captures <= 100
    assert store.held(139)["bad"] == [error(139, i) for i in range(BAD_RING)]
    assert len(store._pool.free) + store.captures == store._pool.size
