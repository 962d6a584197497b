"""Time to saturation at the current trend, and the bounded per-pod series behind it."""
from __future__ import annotations

import numpy as np
import pytest

from otel_ai.metrics import semconv
from otel_ai.metrics.points import SeriesKey, UtilizationSample
from otel_ai.metrics.saturation import SaturationStore, time_to_saturation

S = 10**9
T0 = 1_771_164_000 * S
MINUTE_TIMES = np.arange(0, 600, 10.0)  # ten minutes of 10 s samples


def test_cpu_climbing_toward_the_limit_gives_a_time() -> None:
    rng = np.random.default_rng(1)
    ratios = 0.5 + MINUTE_TIMES * (0.4 / 600) + rng.normal(0, 0.01, MINUTE_TIMES.shape)  # 50 % -> 90 % in 10 min
    seconds = time_to_saturation(MINUTE_TIMES, ratios)
    # From ~90 % at 0.04 %/s, 100 % is ~150 s away.
    assert seconds == pytest.approx(150, rel=0.25)


@pytest.mark.parametrize("seed", range(20))
def test_steady_70_percent_gives_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ratios = 0.7 + rng.normal(0, 0.03, MINUTE_TIMES.shape)
    assert time_to_saturation(MINUTE_TIMES, ratios) is None


def test_bursty_but_flat_cpu_gives_nothing() -> None:
    rng = np.random.default_rng(4)
    ratios = np.clip(0.6 + rng.normal(0, 0.02, MINUTE_TIMES.shape) + (rng.random(MINUTE_TIMES.shape) < 0.1) * 0.3,
                     0, 1)
    assert time_to_saturation(MINUTE_TIMES, ratios) is None


def test_falling_usage_gives_nothing() -> None:
    assert time_to_saturation(MINUTE_TIMES, 0.9 - MINUTE_TIMES / 2000) is None


def test_over_the_limit_is_zero() -> None:
    assert time_to_saturation(MINUTE_TIMES, 0.9 + MINUTE_TIMES / 1000) == 0.0


def test_a_slow_climb_beyond_the_horizon_gives_nothing() -> None:
    slow = 0.3 + MINUTE_TIMES * 1e-5  # +0.6 %/10 min: ~19 h to go
    assert time_to_saturation(MINUTE_TIMES, slow, horizon_s=3600) is None
    assert time_to_saturation(MINUTE_TIMES, slow, horizon_s=86_400) == pytest.approx(69_400, rel=0.01)


def test_too_few_samples_give_nothing() -> None:
    assert time_to_saturation([0, 10, 20], [0.5, 0.7, 0.9]) is None
    assert time_to_saturation([5, 5, 5, 5, 5], [0.5, 0.6, 0.7, 0.8, 0.9]) is None  # no time spread


def key(container: str = "", resource: str = semconv.CPU, source: str = "k8s.pod.cpu_limit_utilization",
        instance: str = "checkout-1") -> SeriesKey:
    return SeriesKey("checkout", instance, container, resource, source)


def test_store_forecasts_a_climbing_pod_and_not_a_steady_one() -> None:
    store = SaturationStore()
    climbing, steady = key(instance="checkout-1"), key(instance="checkout-2")
    for i, t in enumerate(MINUTE_TIMES):
        store.add([UtilizationSample(climbing, T0 + int(t) * S, semconv.RATIO, 0.5 + i * 0.006),
                   UtilizationSample(steady, T0 + int(t) * S, semconv.RATIO, 0.7 + (i % 2) * 0.01)])
    first, second = store.forecasts()
    assert first.series == climbing and first.seconds_to_saturation == pytest.approx((1 - 0.854) / 0.0006)
    assert first.ratio == pytest.approx(0.854)
    assert second.series == steady and second.seconds_to_saturation is None


def test_pod_usage_is_divided_by_the_sum_of_its_container_limits() -> None:
    store = SaturationStore()
    store.add([UtilizationSample(key("app", source="k8s.container.cpu_limit"), T0, semconv.LIMIT, 1.5),
               UtilizationSample(key("sidecar", source="k8s.container.cpu_limit"), T0, semconv.LIMIT, 0.5),
               UtilizationSample(key(source="k8s.pod.cpu.usage"), T0, semconv.USAGE, 1.2)])
    [forecast] = store.forecasts()
    assert forecast.ratio == pytest.approx(0.6)


def test_container_usage_uses_its_own_limit_and_needs_one() -> None:
    store = SaturationStore()
    store.add([UtilizationSample(key("app", source="container.cpu.usage"), T0, semconv.USAGE, 0.5)])
    assert store.forecasts() == []  # no limit known yet: no ratio
    store.add([UtilizationSample(key("app", source="container.cpu.limit"), T0 + S, semconv.LIMIT, 2.0),
               UtilizationSample(key("app", source="container.cpu.usage"), T0 + S, semconv.USAGE, 0.5)])
    [forecast] = store.forecasts()
    assert forecast.ratio == pytest.approx(0.25)


def test_a_vanishing_limit_gives_no_infinite_ratio() -> None:
    """Found by the metrics fuzzer: a limit of 5e-324 cores divides usage into infinity."""
    store = SaturationStore()
    store.add([UtilizationSample(key("app", source="container.cpu.limit"), T0, semconv.LIMIT, 5e-324),
               UtilizationSample(key("app", source="container.cpu.usage"), T0, semconv.USAGE, 0.5)])
    assert store.forecasts() == []


def test_store_is_bounded_and_ignores_out_of_order_samples() -> None:
    store = SaturationStore(max_series=32, samples_per_series=5)
    for i in range(100):
        store.add([UtilizationSample(key(instance=f"pod-{i}"), T0, semconv.RATIO, 0.5)])
    assert len(store) <= 32
    series = key(instance="pod-99")
    for t in (5, 4, 6, 7, 8, 9, 10, 11):
        store.add([UtilizationSample(series, T0 + t * S, semconv.RATIO, 0.5)])
    forecast = store.forecast(series)
    assert forecast is not None and forecast.time_ns == T0 + 11 * S
    assert len(store._series[series]) == 5
