"""Process-wide settings for a long-running server: the garbage collector, the GIL's switch
interval and glibc's malloc, tuned for ingestion.

App.start applies the allocation settings (they only make it cheaper). The GIL's switch
interval trades every other thread's latency for the worker's throughput, so only the
commands that own their process set it (serve, demo, bench): a program or a test suite
that embeds App keeps its own (at 20 ms, a test's fake servers answered late too)."""
from __future__ import annotations

import ctypes
import gc
import os
import sys

# Ingestion allocates many short-lived containers (capture tuples, per-batch lists) and
# almost no reference cycles: CPython's default young-generation pass every 700
# allocations then costs ~0.1-0.3 µs per span for nothing found. A pass every 50,000
# allocations still collects the rare cycle within moments.
GC_YOUNG_THRESHOLD = 50_000
# glibc raises its mmap threshold each time it frees a large block (up to 32 MiB); blocks
# under it come from the heap, which fragments and does not shrink. The service graph's
# per-slot temporaries (8 MiB each at 1M join rows) then kept RSS growing: +74 % over 5M
# spans with 10k routes, +35 % with the threshold held at glibc's initial 128 KiB, above
# which every block gets its own mapping and goes back to the system when freed.
# Held at 1 MiB rather than 128 KiB: a merged batch's columns and their temporaries
# (16,384 rows of 8 bytes: 128 KiB each) then come from the heap instead of a fresh
# mapping the kernel zeroes page by page (server CPU per span -10 % in `otel-ai bench`,
# median of 5 runs: 2.49 -> 2.23 µs), while the join's are still mapped and returned
# (RSS after 5M spans over 10k routes: 364 MiB against 368).
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1024 * 1024
# The worker runs numpy over a merge while receivers wait for the GIL: at CPython's 5 ms
# switch interval each waiting receiver forces a hand-over (futex waits and wake-ups were
# ~15 % of the server's CPU). At 20 ms: bench server CPU per span -8 % (median of 4 runs,
# 2.40 -> 2.20 µs) with Export p99 unchanged (10.0 - 11.0 ms against 10.4 - 11.6).
SWITCH_INTERVAL_S = 0.02
# The heap keeps what the service graph's and the merges' temporaries freed below the mmap
# threshold: 21-56 MiB at 1M join rows (scripts/worker_path.py, 10k routes, malloc_trim at
# each tenth of 3M spans). The worker hands it back this often; ctypes releases the GIL
# for the call, so receivers keep running meanwhile.
HEAP_TRIM_INTERVAL_S = 10.0


def tune_for_ingestion() -> None:
    """Everything, for a process that is a server and nothing else."""
    tune_allocation()
    sys.setswitchinterval(max(sys.getswitchinterval(), SWITCH_INTERVAL_S))


def tune_allocation() -> None:
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
    _hold_mmap_threshold()


def _hold_mmap_threshold() -> None:
    """glibc only; an operator's MALLOC_MMAP_THRESHOLD_ wins."""
    mallopt = None if "MALLOC_MMAP_THRESHOLD_" in os.environ else _glibc("mallopt")
    if mallopt is None:
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)  # Python ints go as C ints, as the prototype wants


def trim_heap() -> bool:
    """Give the heap's free memory back to the system (glibc's malloc_trim); False where
    there is no such call."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def _glibc(name: str):
    """A function of the C library this process runs on, if it is glibc's and has it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # another libc
        return None
