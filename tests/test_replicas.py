"""Scale-out: several `otel-ai serve` replicas behind service-keyed routing.

In production the OpenTelemetry Collector's `loadbalancing` exporter with
`routing_key: service` sits in front of N otel-ai replicas and sends each ResourceSpans
to the replica that owns its `service.name`. Here the test is that router: it splits
every export request by service and POSTs each replica its share. The Collector places
services on a consistent-hash ring; this test uses `zlib.crc32(service) % N`. Any stable
mapping gives the property under test: each replica sees whole services, so it sees
every span of the routes it tracks and the replicas never raise the same incident.

Dependency (CLIENT) spans travel inside the calling service's ResourceSpans, so a
dependency incident is raised by the replica that owns the callers. A dependency is
keyed by its name only, so that stays one incident only while all its callers live on
one replica; the test checks that this holds for the topology and mapping it uses.

Then one replica is killed with SIGKILL and restarted on the same data directory: its
open incidents come back from its SQLite store, the other replica is untouched.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from otel_ai.testing import topology as topo
from otel_ai.testing.scenarios import steady_noise
from otel_ai.testing.traffic import Fault, TrafficGenerator

NS = 1_000_000_000
REPLICAS = 2
WARMUP_S, FAULT_S = 360.0, 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LISTENING = re.compile(r"otel-ai listening: OTLP/gRPC :(\d+)\s+OTLP/HTTP :(\d+)/v1/traces\S*\s+admin :(\d+)")

# Two faults on two services that the mapping puts on different replicas (asserted below).
# Each breaks one route for one tenant: one ERROR_RATE_SPIKE, nothing upstream of it.
FAULTS = (
    Fault("tenant_failing", start_s=WARMUP_S, service="checkout", route="POST /api/cart/items", target="acme",
          params={"duration_s": FAULT_S, "rate": 0.8}),
    Fault("tenant_failing", start_s=WARMUP_S, service="catalog", route="GET /api/products/{id}/reviews",
          target="acme", params={"duration_s": FAULT_S, "rate": 0.8}),
)
EXPECTED = tuple(("ERROR_RATE_SPIKE", f.service, *f.route.split(" ", 1)) for f in FAULTS)  # type, service, method, route


def owner(service: str) -> int:
    """The replica that owns a service: a stable hash of service.name."""
    return zlib.crc32(service.encode()) % REPLICAS


def dependency_callers() -> dict[str, set[str]]:
    """Dependency name (as the detectors derive it) -> the services whose client spans call it."""
    callers: dict[str, set[str]] = {}
    for route in topo.ROUTES:
        for call in route.calls:
            callers.setdefault(topo.call_dependency_name(call), set()).add(route.service)
    return callers


def get(url: str) -> bytes:
    with _OPENER.open(url, timeout=10) as response:
        return response.read()


def wait_for(what: str, check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


class Replica:
    """`otel-ai serve` in a child process on free ports, offline (no Claude, no Slack)."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []
        self.grpc_port = self.http_port = self.admin_port = 0

    def start(self) -> Replica:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN")}
        env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        self.log = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_ai", "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--admin-port", "0"],
            env=env, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.grpc_port, self.http_port, self.admin_port = self._ports()
        return self

    def _ports(self) -> tuple[int, int, int]:
        assert self.process is not None and self.process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                threading.Thread(target=self._drain, daemon=True).start()  # keep the pipe from filling up
                return int(match[1]), int(match[2]), int(match[3])
            if not line and self.process.poll() is not None:
                break
        pytest.fail(f"{self.name}: otel-ai serve did not start:\n{''.join(self.log[-30:])}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def post(self, body: bytes) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v1/traces", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
        with _OPENER.open(request, timeout=10) as response:
            if response.status != 200:
                pytest.fail(f"{self.name}: POST /v1/traces answered {response.status}")

    def incidents(self, status: str | None = None) -> list[dict]:
        query = "limit=500" + (f"&status={status}" if status else "")
        page = json.loads(get(f"http://127.0.0.1:{self.admin_port}/api/incidents?{query}"))
        if page["total"] > len(page["incidents"]):
            pytest.fail(f"{self.name}: more than one page of incidents ({page['total']})")
        return page["incidents"]

    def metric(self, name: str, labels: str = "") -> float:
        text = get(f"http://127.0.0.1:{self.admin_port}/metrics").decode()
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
        return float(match[1]) if match else 0.0

    def spans_received(self) -> int:
        return int(self.metric("otel_ai_spans_received_total", '{transport="http"}'))

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


class Router:
    """What the loadbalancing exporter does with `routing_key: service`: one request per replica."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.spans = [0] * len(replicas)  # spans routed to each replica
        self.services: list[Counter[str]] = [Counter() for _ in replicas]  # spans per service per replica

    def send(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        shares = [ExportTraceServiceRequest() for _ in self.replicas]
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), None)
            if not service:
                pytest.fail("a ResourceSpans without service.name: the loadbalancing exporter would refuse it")
            index = owner(service)
            shares[index].resource_spans.append(resource_spans)
            count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            self.spans[index] += count
            self.services[index][service] += count
        for replica, share in zip(self.replicas, shares):
            if share.resource_spans:
                replica.post(share.SerializeToString())


def incident_key(incident: dict) -> tuple[str, str, str, str, str]:
    return (incident["type"], incident["subject_kind"], incident["service"], incident["method"], incident["route"])


def test_replicas_with_service_keyed_routing(tmp_path: Path) -> None:
    started = time.monotonic()
    services = [s.name for s in topo.SERVICES]
    owners = {service: owner(service) for service in services}
    fault_replicas = [owners[f.service] for f in FAULTS]
    if len(set(fault_replicas)) != REPLICAS:
        pytest.fail(f"the faults must land on different replicas, the mapping gives {owners}")
    # A dependency is one subject per replica that sees its callers: all callers on one replica, or two incidents.
    split = {d: sorted(c) for d, c in dependency_callers().items() if len({owners[s] for s in c}) > 1}
    if split:
        pytest.fail(f"dependencies called from services on different replicas would be tracked twice: {split}")

    replicas = [Replica(f"replica-{i}", tmp_path / f"replica-{i}") for i in range(REPLICAS)]
    try:
        for replica in replicas:
            replica.start()
        router = Router(replicas)
        start_ns = time.time_ns() - int((WARMUP_S + FAULT_S + 30) * NS)
        generator = TrafficGenerator(seed=7, start_ns=start_ns, noise=steady_noise(), faults=list(FAULTS))
        for body in generator.serialized_batches(WARMUP_S + FAULT_S, interval_s=5.0):
            router.send(body)
        sent_s = time.monotonic() - started

        # Every routed span arrived, and only there.
        def counts_match() -> bool:
            return [r.spans_received() for r in replicas] == router.spans
        wait_for("each replica's span count to match what was routed to it", counts_match, timeout_s=10)
        received = [r.spans_received() for r in replicas]

        def expected_found() -> bool:
            keys = {(i["type"], i["service"], i["method"], i["route"]) for r in replicas for i in r.incidents()}
            return all(e in keys for e in EXPECTED)
        wait_for(f"both expected incidents {EXPECTED}", expected_found)
        incidents = [r.incidents() for r in replicas]

        # Each replica owns whole services: every service went to exactly one replica, both got traffic.
        for service in services:
            holders = [i for i, c in enumerate(router.services) if c[service]]
            if holders != [owners[service]]:
                pytest.fail(f"{service} went to replicas {holders}, expected only {owners[service]}")
        for i, replica in enumerate(replicas):
            if not router.spans[i]:
                pytest.fail(f"{replica.name} got no spans: the test does not cover it")
        assert received == router.spans, f"spans received {received} != spans routed {router.spans}"

        # Each replica's incidents belong to services it owns (dependencies: through their callers).
        callers = dependency_callers()
        for i, (replica, found) in enumerate(zip(replicas, incidents)):
            for incident in found:
                if incident["subject_kind"] == "dependency":
                    ok = all(owners[s] == i for s in callers.get(incident["service"], ()))
                    ok = ok and incident["service"] in callers
                else:
                    ok = owners.get(incident["service"]) == i
                if not ok:
                    pytest.fail(f"{replica.name} raised {incident_key(incident)} for a subject it does not own")

        # No incident is raised twice, on one replica or across them.
        keys = Counter(incident_key(i) for found in incidents for i in found)
        doubled = {k: n for k, n in keys.items() if n > 1}
        if doubled:
            pytest.fail(f"incidents raised more than once: {doubled}")
        for expected, replica_index in zip(EXPECTED, fault_replicas):
            where = [i for i, found in enumerate(incidents) for x in found
                     if (x["type"], x["service"], x["method"], x["route"]) == expected]
            if where != [replica_index]:
                pytest.fail(f"{expected} raised on replicas {where}, expected once on {replica_index}")

        # kill -9 the catalog replica and restart it on the same data directory.
        victim_index = fault_replicas[1]
        victim, other = replicas[victim_index], replicas[1 - victim_index]
        open_before = {i["id"]: i for i in victim.incidents(status="open")}
        if not open_before:
            pytest.fail(f"{victim.name} has no open incident to restore")
        other_before = sorted((i["id"], i["status"]) for i in other.incidents())
        other_spans = other.spans_received()
        old_ports = (victim.http_port, victim.admin_port)
        victim.kill9()
        victim.start()
        wait_for("the restarted replica to hold its open incidents in memory",
                 lambda: victim.metric("otel_ai_incidents_open") >= len(open_before))
        open_gauge = int(victim.metric("otel_ai_incidents_open"))
        open_after = {i["id"]: i for i in victim.incidents(status="open")}
        missing = sorted(set(open_before) - set(open_after))
        if missing:
            pytest.fail(f"{victim.name} lost open incidents over kill -9: {missing}")
        for incident_id, before in open_before.items():
            assert incident_key(open_after[incident_id]) == incident_key(before)
        assert victim.spans_received() == 0  # a new process: nothing re-sent, the incidents came from SQLite
        assert sorted((i["id"], i["status"]) for i in other.incidents()) == other_before
        assert other.spans_received() == other_spans and other.process.poll() is None

        elapsed = time.monotonic() - started
        print(f"\nservice-keyed routing over {REPLICAS} replicas, {sum(router.spans)} spans of "
              f"{WARMUP_S + FAULT_S:.0f}s event time: replicas up and traffic routed after {sent_s:.1f}s, whole test {elapsed:.1f}s")
        for i, replica in enumerate(replicas):
            owned = ", ".join(f"{s}={n}" for s, n in sorted(router.services[i].items()))
            print(f"  {replica.name}: {router.spans[i]} spans routed = {received[i]} received ({owned})")
            for incident in incidents[i]:
                print(f"    {incident['type']} {incident['subject_kind']} {incident['service']} "
                      f"{incident['method']} {incident['route']} [{incident['status']}]")
        print(f"  {victim.name} killed -9 and restarted (ports {old_ports} -> "
              f"{(victim.http_port, victim.admin_port)}): {len(open_before)} open incident(s) back, "
              f"otel_ai_incidents_open = {open_gauge}")
    finally:
        for replica in replicas:
            replica.stop()
