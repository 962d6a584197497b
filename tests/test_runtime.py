"""The process-wide tuning a server applies at start (otel_ai/runtime.py)."""
from __future__ import annotations

import gc
import sys

import pytest

from otel_ai import runtime


@pytest.fixture
def gc_threshold():
    saved, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.set_threshold(*saved)
    sys.setswitchinterval(interval)


def test_garbage_is_collected_less_often_but_still_collected(gc_threshold):
    gc.set_threshold(700, 10, 10)
    runtime.tune_for_ingestion()
    assert gc.get_threshold() == (runtime.GC_YOUNG_THRESHOLD, 10, 10)
    assert gc.isenabled()


def test_a_higher_threshold_set_by_the_operator_is_kept(gc_threshold):
    gc.set_threshold(200_000, 5, 5)
    runtime.tune_for_ingestion()
    assert gc.get_threshold() == (200_000, 5, 5)


class _FakeLibc:
    def __init__(self, calls: list):
        self.calls = calls

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_the_mmap_threshold_is_held_unless_the_operator_set_it(gc_threshold, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: _FakeLibc(calls))
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    runtime.tune_for_ingestion()
    assert calls == []
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    runtime.tune_for_ingestion()
    assert calls == [(runtime.M_MMAP_THRESHOLD, runtime.MMAP_THRESHOLD_BYTES)]


def test_threads_hand_over_the_gil_less_often(gc_threshold):
    sys.setswitchinterval(0.005)
    runtime.tune_for_ingestion()
    assert sys.getswitchinterval() == pytest.approx(runtime.SWITCH_INTERVAL_S, rel=1e-3)
    sys.setswitchinterval(0.1)  # an embedding application's longer interval is kept
    runtime.tune_for_ingestion()
    assert sys.getswitchinterval() == pytest.approx(0.1, rel=1e-3)


def test_an_embedded_app_keeps_its_interpreters_switch_interval(gc_threshold, tmp_path):
    """Only the commands that own their process lengthen the GIL's hand-over interval: a
    test suite embedding App with its fake servers keeps CPython's. The collector is tuned."""
    from otel_ai.app import App, Credentials
    from otel_ai.config import load_settings

    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    settings = load_settings(env={})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, tmp_path / "data", console=False, credentials=Credentials())
    app.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.005, rel=1e-3)
        assert gc.get_threshold()[0] == runtime.GC_YOUNG_THRESHOLD
    finally:
        app.stop(grace_s=0)


def test_the_heap_is_trimmed_where_glibc_offers_it():
    import ctypes

    blocks = [ctypes.create_string_buffer(64 * 1024) for _ in range(200)]  # heap blocks under the mmap threshold
    del blocks
    assert runtime.trim_heap() is (sys.platform.startswith("linux") and runtime._glibc("malloc_trim") is not None)
