"""Named traffic presets: one per fault kind, plus 30 minutes of benign noise.

Every fault preset also carries the two steady benign noises (a low-traffic flaky
route and a steadily 5 %-flaky route), so a detector must stay quiet on those while
it finds the fault. Faults start at ``warmup_s``. The behaviour faults (rate limits,
retries, credential stuffing, saturation) are presets too, with their look-alikes
running alongside.
"""
from __future__ import annotations

from otel_ai.testing.traffic import (
    BEHAVIOUR_FAULT_KINDS, BEHAVIOUR_NOISE_KINDS, FAULT_KINDS, Fault, Noise, TrafficGenerator,
)

SCENARIOS: tuple[str, ...] = FAULT_KINDS
BEHAVIOUR_SCENARIOS: tuple[str, ...] = BEHAVIOUR_FAULT_KINDS
BENIGN = "benign"

# Routes the recurring 4xx bursts cycle through (route ids "service:METHOD TEMPLATE").
_BURST_ROUTES = (
    "checkout:POST /api/cart/items",
    "catalog:GET /api/products/{id}",
    "orders:GET /api/orders/{order_id}",
)


def steady_noise() -> list[Noise]:
    return [Noise("low_traffic_flaky"), Noise("steady_flaky")]


def benign_noise(duration_s: float = 1800.0, warmup_s: float = 600.0) -> list[Noise]:
    """All four noise kinds: steady ones from 0, 4xx bursts and surges recurring after warmup."""
    noise = steady_noise()
    t, i = warmup_s, 0
    while t + 120 <= duration_s:
        noise.append(Noise("4xx_burst", start_s=t, duration_s=120.0, route=_BURST_ROUTES[i % len(_BURST_ROUTES)]))
        t += 420.0
        i += 1
    t = warmup_s + 180.0
    while t + 180 <= duration_s:
        noise.append(Noise("traffic_surge", start_s=t, duration_s=180.0))
        t += 540.0
    return noise


def lookalike_noise() -> list[Noise]:
    """The behaviour faults' benign look-alikes, from the start: a tenant's 429 bursts at
    its low limit, retries at their usual rate, a login route with its usual failed
    passwords. (A surge the shop absorbs is benign_noise's traffic_surge.)"""
    return [Noise(kind) for kind in BEHAVIOUR_NOISE_KINDS]


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
    if name in BEHAVIOUR_SCENARIOS:
        return TrafficGenerator(seed=seed, faults=[Fault(name, start_s=float(warmup_s))],
                                noise=steady_noise() + lookalike_noise(), **kw)
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS + BEHAVIOUR_SCENARIOS + (BENIGN,))}")
    return TrafficGenerator(seed=seed, faults=[_PRESETS.get(name, lambda t: Fault(name, start_s=t))(float(warmup_s))],
                            noise=steady_noise(), **kw)


# Presets that narrow the generator's defaults.
_PRESETS = {
    # the new version breaks two of checkout's four routes; GET /api/cart stays healthy
    "bad_deploy": lambda t: Fault("bad_deploy", start_s=t, service="checkout",
                                  params={"routes": ["POST /api/checkout", "POST /api/cart/items"]}),
}
