"""Windows and the counters they keep: weighted sums, per batch, only what detectors need."""
from __future__ import annotations

import numpy as np

from otel_ai.counters import AUTH_FAILURES, BUSY_MS, ERRORS, REQUESTS, THROTTLED, Counter, Retries
from otel_ai.decode import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, SpanBatch
from otel_ai.histogram import BINS, bin_index
from otel_ai.windows import EARLY_SLOTS, OPEN_SLOTS, WindowStore, WindowView

SLOT_NS = 10_000_000_000
T0 = 1_771_164_000 * 1_000_000_000  # a slot boundary


def batch(subject, end_s, *, weight=None, error=None, http=None, grpc=None, kind=None, parent=None, resend=None,
          duration_ms=None) -> SpanBatch:
    """A SpanBatch from plain lists, one row per span (the column contract, without decode)."""
    n = len(subject)
    col = lambda values, default, dtype: np.array(values if values is not None else [default] * n, dtype=dtype)  # noqa: E731
    end = T0 + (np.array(end_s, dtype=np.float64) * 1e9).astype(np.int64)
    duration = col(duration_ms, 10.0, np.float64)
    b = SpanBatch(
        subject_id=np.array(subject, dtype=np.int32), end_ns=end, duration_ms=duration,
        error=col(error, False, bool), client_error=np.zeros(n, dtype=bool), kind=col(kind, SPAN_KIND_SERVER, np.int8),
        start_ns=end - (duration * 1e6).astype(np.int64), http_status=col(http, 200, np.int16),
        grpc_status=col(grpc, -1, np.int8), resend_count=col(resend, 0, np.int16), weight=col(weight, 1.0, np.float32),
        parent_span_id=col(parent, 0, np.uint64))
    b.max_end_ns, b.median_end_ns = int(end.max()), int(np.median(end))
    return b


def store(*counters: Counter) -> WindowStore:
    windows = WindowStore(SLOT_NS, 31, counters or (REQUESTS, ERRORS))
    windows.start_at(T0)
    return windows


def close_until(windows: WindowStore, slot_end_s: float) -> int:
    """Close every slot ending by T0 + slot_end_s; the last closed slot."""
    closed = None
    while windows.first_open_slot * SLOT_NS + SLOT_NS <= T0 + slot_end_s * 1e9:
        closed = windows.close_one()
    return closed


def view(windows: WindowStore, closed: int, size: int) -> WindowView:
    return WindowView(windows, closed, size, None, [None] * size, np.zeros(size, dtype=np.int8))


def test_counters_add_up_weights_not_spans():
    windows = store(REQUESTS, ERRORS, BUSY_MS)
    windows.add(batch([0, 0, 1], [1, 2, 3], weight=[1.0, 2.5, 0.5], error=[False, True, True],
                      duration_ms=[10, 20, 40]))
    v = view(windows, close_until(windows, 10), 2)
    assert v.sum("requests", 1).tolist() == [3.5, 0.5]
    assert v.sum("errors", 1).tolist() == [2.5, 0.5]
    assert v.sum("busy_ms", 1).tolist() == [10 + 2.5 * 20, 0.5 * 40]
    assert v.hist(1, np.array([0, 1])).sum(axis=1).tolist() == [3.5, 0.5]  # the histogram is weighted too


def test_windows_keep_only_the_counters_asked_for():
    windows = store(REQUESTS, THROTTLED)
    assert set(windows.values) == {"requests", "squared_weights", "throttled"}
    assert set(store(THROTTLED).values) == {"requests", "squared_weights", "throttled"}  # these two always


def test_status_counters_read_http_and_grpc_codes():
    b = batch([0] * 8, [1] * 8, http=[429, 401, 403, 404, 200, 0, 0, 0], grpc=[-1, -1, -1, -1, -1, 8, 16, 7])
    assert THROTTLED.rows(b).tolist() == [True, False, False, False, False, True, False, False]
    assert AUTH_FAILURES.rows(b).tolist() == [False, True, True, False, False, False, True, True]


def test_a_counter_computes_its_rows_once_per_batch():
    calls = []
    counter = Counter("odd", select=lambda b: calls.append(1) or (b.subject_id % 2 == 1))
    b = batch([0, 1, 1], [1, 1, 1])
    assert counter.rows(b).tolist() == [False, True, True] and counter.rows(b) is counter.rows(b)
    assert len(calls) == 1  # decode's captures and the windows share it


def test_pre_aggregated_counts_equal_the_same_spans():
    spans, aggregated = store(REQUESTS, ERRORS), store(REQUESTS, ERRORS)
    spans.add(batch([0, 0, 0, 2], [1, 2, 3, 4], error=[True, False, False, True], duration_ms=[10, 10, 10, 300]))
    hist = np.zeros((2, BINS))
    hist[0, bin_index(np.array([10.0]))[0]], hist[1, bin_index(np.array([300.0]))[0]] = 3, 1
    aggregated.add_aggregates(np.array([0, 2]), T0 + np.array([2, 4]) * 1_000_000_000,
                              {"requests": np.array([3, 1]), "errors": np.array([1, 1]), "unknown": np.array([9, 9])},
                              hist)
    for windows in (spans, aggregated):
        windows.ensure(3)
    closed = close_until(spans, 10)
    assert close_until(aggregated, 10) == closed
    for name in ("requests", "errors"):
        assert view(spans, closed, 3).sum(name, 1).tolist() == view(aggregated, closed, 3).sum(name, 1).tolist()
    assert np.array_equal(spans.hist, aggregated.hist)


def test_slots_close_in_order_and_late_or_far_early_spans_are_counted_as_such():
    windows = store()
    first = windows.first_open_slot
    assert first == T0 // SLOT_NS - EARLY_SLOTS
    windows.add(batch([0], [25]))
    closed = close_until(windows, 30)
    assert view(windows, closed, 1).series("requests", 0, 3).tolist() == [0, 0, 1]
    result = windows.add(batch([0, 0, 0], [5, 35, 35 + OPEN_SLOTS * 10]))  # closed slot, open slot, too far ahead
    assert (result.counted, result.late, result.too_early) == (1, 1, 1)


def test_a_closed_cell_is_empty_again_when_the_ring_comes_round():
    windows = store()
    windows.add(batch([0], [1]))
    close_until(windows, 10 * (windows.ring + 2))
    assert windows.values["requests"].sum() == 0


def test_the_view_knows_how_much_history_it_has_seen():
    windows = store()
    windows.add(batch([0], [1]))
    assert view(windows, close_until(windows, 10), 1).seen_slots == 1
    assert view(windows, close_until(windows, 60), 1).seen_slots == 6
    windows.skip_to(T0 // SLOT_NS + 100)  # a gap longer than the ring: history is gone
    assert windows.first_slot == T0 // SLOT_NS + 100 and windows.values["requests"].sum() == 0


# --------------------------------------------------------------------------- retries

def calls(parents, end_s, resend=None, dependency=None) -> SpanBatch:
    n = len(parents)
    return batch(dependency or [1] * n, end_s, kind=[SPAN_KIND_CLIENT] * n, parent=parents, resend=resend)


def test_retries_are_resends_and_repeats_from_the_same_parent():
    retries = Retries()
    b = calls([7, 7, 7, 8, 9, 0, 0], [1, 1.2, 1.4, 1, 1, 1, 1], resend=[0, 0, 0, 0, 2, 0, 0],
              dependency=[1, 1, 1, 1, 1, 1, 1])
    # 7: a call and two repeats; 8: one call; 9: a resend; parentless calls are never repeats.
    assert retries(b).tolist() == [False, True, True, False, True, False, False]
    other = calls([7, 7], [1, 1.2], dependency=[1, 2])  # the same parent calling two dependencies
    assert Retries()(other).tolist() == [False, False]


def test_a_retry_in_the_next_batch_is_still_a_retry_within_the_window():
    retries = Retries()
    assert retries(calls([7, 8], [1, 1])).tolist() == [False, False]
    assert retries(calls([7, 9], [1.8, 2])).tolist() == [True, False]  # 7 again: straddled two exports
    assert retries(calls([8], [30])).tolist() == [False]  # 8 again, but 29 s later: a new call


def test_retries_remember_a_bounded_number_of_calls():
    retries = Retries(calls=2)
    for second in range(5):
        retries(calls([100 + second], [1 + second * 0.1]))
    assert len(retries._keys) == 2
    assert retries(calls([100], [2])).tolist() == [False]  # forgotten: beyond the last two calls
    assert retries(calls([104], [2])).tolist() == [True]  # two calls back: remembered


def test_retries_are_the_same_fed_request_by_request_or_many_at_once():
    from otel_ai.decode.columns import merge_batches

    rng = np.random.default_rng(5)
    batches = [calls(rng.integers(0, 30, 50).tolist(), (k + rng.random(50)).tolist(),
                     dependency=rng.integers(1, 4, 50).tolist()) for k in range(24)]
    one_by_one, grouped = Retries(calls=40), Retries(calls=40)
    alone = np.concatenate([one_by_one(b) for b in batches])
    together = np.concatenate([grouped(merge_batches(batches[k:k + 6])) for k in range(0, 24, 6)])
    assert alone.sum() > 0 and np.array_equal(alone, together)


def test_the_cells_of_a_batch_are_the_same_whether_marked_or_sorted():
    import otel_ai.windows as windows_module
    from otel_ai.windows import WindowStore

    rng = np.random.default_rng(11)
    store = WindowStore(10 * 1_000_000_000, 30)
    for rows, subjects in ((16_384, 40), (200, 3_000), (1, 1)):
        sid = rng.integers(0, subjects, rows).astype(np.int32)
        slot = rng.integers(1_000, 1_004, rows)
        marked = store._cells(sid, slot)
        expected = np.unique(sid.astype(np.int64) * store.ring + slot % store.ring, return_inverse=True)
        assert np.array_equal(marked[0], expected[0]) and np.array_equal(marked[1], expected[1].ravel())
    assert windows_module.DENSE_CELLS_PER_ROW * 16_384 >= 64 * store.ring  # the first case took the marked path


def test_retries_match_a_plain_reading_of_the_rule_on_random_batches():
    """Against a plain list of every call so far: a call repeats when the last earlier call
    with its parent and dependency came at most `calls` calls before it and ended within
    the window."""
    rng = np.random.default_rng(12)
    retries, seen = Retries(calls=25), []  # seen: (key, end_ns) of every call, in order
    for k in range(60):
        n = int(rng.integers(1, 40))
        parents = rng.integers(0, 12, n).tolist()
        deps = rng.integers(1, 3, n).tolist()
        end_s = float(k) * rng.choice([0.5, 4.0])
        b = calls(parents, [end_s] * n, dependency=deps)
        got = retries(b).tolist()
        expected = []
        for p, d, end in zip(parents, deps, b.end_ns.tolist()):
            if p == 0:
                expected.append(False)
                continue
            last = next((i for i in range(len(seen) - 1, -1, -1) if seen[i][0] == (p, d)), None)
            expected.append(last is not None and len(seen) - last <= 25 and end - seen[last][1] <= retries.window_ns)
            seen.append(((p, d), end))
        assert got == expected, k
