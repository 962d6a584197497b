"""Named traffic presets: one per fault kind, plus 30 minutes of benign noise.

Every fault preset also carries the two steady benign noises (a low-traffic flaky
route and a steadily 5 %-flaky route), so a detector must stay quiet on those while
it finds the fault. Faults start at ``warmup_s``.
"""
from __future__ import annotations

from otel_ai.testing.traffic import DEEP_FAULT_KINDS, FAULT_KINDS, Fault, Noise, TrafficGenerator

SCENARIOS: tuple[str, ...] = FAULT_KINDS
BENIGN = "benign"

# Routes the recurring 4xx bursts cycle through (route ids "service:METHOD TEMPLATE").
_BURST_ROUTES = (
    "checkout:POST /api/cart/items",
    "catalog:GET /api/products/{id}",
    "orders:GET /api/orders/{order_id}",
)


def steady_noise() -> list[Noise]:
    return [Noise("low_traffic_flaky"), Noise("steady_flaky")]


def recurring(kind: str, first_s: float, every_s: float, lasting_s: float, until_s: float,
              routes: tuple = (None,), params: dict | None = None) -> list[Noise]:
    """A noise every `every_s` from `first_s`, each lasting `lasting_s` and over by `until_s`,
    cycling through `routes`."""
    out, t = [], first_s
    while t + lasting_s <= until_s:
        out.append(Noise(kind, start_s=t, duration_s=lasting_s, route=routes[len(out) % len(routes)],
                         params=dict(params or {})))
        t += every_s
    return out


def benign_noise(duration_s: float = 1800.0, warmup_s: float = 600.0) -> list[Noise]:
    """All four noise kinds: steady ones from 0, 4xx bursts and surges recurring after warmup."""
    return (steady_noise() + recurring("4xx_burst", warmup_s, 420.0, 120.0, duration_s, _BURST_ROUTES)
            + recurring("traffic_surge", warmup_s + 180.0, 540.0, 180.0, duration_s))


def benign(seed: int = 1, duration_s: float = 1800.0, warmup_s: float = 600.0, **kw) -> TrafficGenerator:
    return TrafficGenerator(seed=seed, noise=benign_noise(duration_s, warmup_s), **kw)


def scenario(name: str, seed: int = 1, warmup_s: float = 600, **kw) -> TrafficGenerator:
    """A preset generator: ``name`` is a fault kind from SCENARIOS, or "benign".

    Extra keyword arguments (start_ns, rate_scale) go to TrafficGenerator. The fault's
    default place (service, route, dependency, pod, tenant, new version) is chosen by
    the generator; read it back from ``gen.faults[0]`` and ``gen.ground_truth``.
    """
    if name == BENIGN:
        return benign(seed, warmup_s=warmup_s, **kw)
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS + (BENIGN,))}")
    return TrafficGenerator(seed=seed, faults=[_PRESETS.get(name, lambda t: Fault(name, start_s=t))(float(warmup_s))],
                            noise=steady_noise(), **kw)


# Presets that narrow the generator's defaults.
_PRESETS = {
    # the new version breaks two of checkout's four routes; GET /api/cart stays healthy
    "bad_deploy": lambda t: Fault("bad_deploy", start_s=t, service="checkout",
                                  params={"routes": ["POST /api/checkout", "POST /api/cart/items"]}),
}


# --------------------------------------------------------------------------- the deep topology
# Faults 3 hops below the gateway's entry routes, on traffic with the background noise real
# systems have (deep_topology.py). Kept apart from SCENARIOS, which run on the shop.

DEEP_SCENARIOS: tuple[str, ...] = DEEP_FAULT_KINDS
DEEP_BENIGN = "deep_benign"

# A search dependency slows down in bursts; two routes fail 10-30 % in bursts: stations
# (behind the catch-all route) and notifications (behind every booking).
_DEEP_BURSTY = (
    ("latency_bursts", "seat-service:GET /seats/availability", {}),
    ("error_bursts", "station-service:GET /stations", {}),
    ("error_bursts", "notification-service:POST /notifications", {"every_s": 600.0}),
)
_DEEP_4XX_ROUTES = ("web-gateway:GET /api/trains/{id}", "web-gateway:GET /api/bookings/{id}", "web-gateway:GET /api/*")


def deep_background_noise() -> list[Noise]:
    """Always on: bursty routes and the daily swing of traffic."""
    return [Noise(kind, route=route, params=dict(params)) for kind, route, params in _DEEP_BURSTY] + [Noise("daily_swing")]


def deep_benign_noise(duration_s: float = 6 * 3600.0, warmup_s: float = 600.0) -> list[Noise]:
    """The background plus recurring 4xx bursts on the gateway and traffic surges."""
    return (deep_background_noise() + recurring("4xx_burst", warmup_s, 900.0, 120.0, duration_s, _DEEP_4XX_ROUTES)
            + recurring("traffic_surge", warmup_s + 300.0, 1800.0, 180.0, duration_s, params={"factor": 3.0}))


def deep_scenario(name: str, seed: int = 1, warmup_s: float = 600, **kw) -> TrafficGenerator:
    """A deep-topology generator: ``name`` is one of DEEP_SCENARIOS or "deep_benign" (6 h of
    benign noise by default; pass duration_s). The fault's place, its affected routes and
    its root cause are in ``gen.faults[0]`` and ``gen.ground_truth``."""
    if name == DEEP_BENIGN:
        duration_s = kw.pop("duration_s", 6 * 3600.0)
        return TrafficGenerator(seed=seed, noise=deep_benign_noise(duration_s, warmup_s), topology="deep", **kw)
    if name not in DEEP_SCENARIOS:
        raise ValueError(f"unknown deep scenario {name!r}; known: {', '.join(DEEP_SCENARIOS + (DEEP_BENIGN,))}")
    return TrafficGenerator(seed=seed, faults=[Fault(name, start_s=float(warmup_s))], noise=deep_background_noise(),
                            topology="deep", **kw)
