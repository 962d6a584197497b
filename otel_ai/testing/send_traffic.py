"""Send a few minutes of realistic traffic with a planted fault to an OTLP/HTTP endpoint.

    python -m otel_ai.testing.send_traffic --endpoint http://127.0.0.1:4318

The traffic is the generator's (a shop of several services, calls 4+ hops deep, bursty
noise), ending now: six healthy minutes for the baselines, then two minutes in which
one dependency fails. It is sent as fast as the endpoint takes it, as protobuf, like an
SDK's or a Collector's exporter, so an incident opens within seconds instead of after
minutes of live traffic. Tests use the same function.
"""
from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

from otel_ai.testing.scenarios import steady_noise
from otel_ai.testing.traffic import FAULT_KINDS, Fault, TrafficGenerator

NS = 1_000_000_000
WARMUP_S, FAULT_S = 360.0, 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy


def recent_traffic(fault: str = "dependency_errors", seed: int = 3) -> TrafficGenerator:
    """Traffic ending about now, with `fault` for its last FAULT_S seconds."""
    start = time.time_ns() - int((WARMUP_S + FAULT_S + 30) * NS)
    return TrafficGenerator(seed=seed, start_ns=start, noise=steady_noise(), faults=[
        Fault(fault, start_s=WARMUP_S, params={"duration_s": FAULT_S, "rate": 0.6})])


def send(endpoint: str, generator: TrafficGenerator, seconds: float = WARMUP_S + FAULT_S,
         progress=None) -> int:
    """POST the generator's batches to endpoint/v1/traces; the number of requests sent."""
    url = endpoint.rstrip("/") + "/v1/traces"
    sent = 0
    for body in generator.serialized_batches(seconds, interval_s=5.0):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
        with _OPENER.open(request, timeout=10) as response:
            response.read()
        sent += 1
        if progress is not None and sent % 12 == 0:  # 12 batches of 5 s: one line per simulated minute
            progress(f"sent {sent * 5 // 60} min of traffic ({sent} requests)")
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_ai.testing.send_traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4318", help="OTLP/HTTP base URL (default %(default)s)")
    parser.add_argument("--fault", default="dependency_errors", choices=FAULT_KINDS,
                        help="what goes wrong in the last two minutes (default %(default)s)")
    args = parser.parse_args(argv)
    generator = recent_traffic(args.fault)
    planted = generator.faults[0]
    print(f"sending {(WARMUP_S + FAULT_S) / 60:.0f} min of traffic to {args.endpoint}; "
          f"'{planted.kind}' on {planted.service} ({planted.target}) in the last {FAULT_S / 60:.0f} min", flush=True)
    try:
        sent = send(args.endpoint, generator, progress=lambda line: print(line, flush=True))
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot send to {args.endpoint}: {exc} (is otel-ai serve running?)", file=sys.stderr)
        return 1
    print(f"done: {sent} requests; incidents appear within seconds (otel-ai incidents list)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
