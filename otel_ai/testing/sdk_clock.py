"""Simulated event time for real OpenTelemetry SDK metric apps in tests.

The Python SDK stamps metric points (start times, collection times, observations) with
`time.time_ns`, imported into a few of its modules. Pointing those at a clock the test
moves lets an app export "every 10 s" for ten minutes in well under a second: each
`force_flush` is one export interval, stamped like a real one. Everything else in the
SDK (aggregation, temporality, exemplars, the OTLP exporter) runs unchanged.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

# The SDK modules that read the wall clock for metric timestamps (opentelemetry-sdk 1.2x-1.4x).
SDK_MODULES = (
    "opentelemetry.sdk.metrics._internal",
    "opentelemetry.sdk.metrics._internal.instrument",
    "opentelemetry.sdk.metrics._internal.measurement_consumer",
    "opentelemetry.sdk.metrics._internal.metric_reader_storage",
    "opentelemetry.sdk.metrics._internal._view_instrument_match",
)


class SdkClock:
    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> int:
        self.now_ns += round(seconds * 1e9)
        return self.now_ns


@contextmanager
def sdk_clock(start_ns: int) -> Iterator[SdkClock]:
    """Every metric timestamp the SDK takes comes from the returned clock until exit."""
    clock = SdkClock(start_ns)
    modules = [importlib.import_module(name) for name in SDK_MODULES]
    missing = [m.__name__ for m in modules if not hasattr(m, "time_ns")]
    if missing:
        raise RuntimeError(f"opentelemetry-sdk moved its clock: {missing} no longer import time_ns")
    saved = [m.time_ns for m in modules]
    for module in modules:
        module.time_ns = clock
    try:
        yield clock
    finally:
        for module, original in zip(modules, saved):
            module.time_ns = original
