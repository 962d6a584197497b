"""Which OTLP metrics otel-ai reads, and how (OpenTelemetry semantic conventions).

Two families: request-duration histograms, which give RED (rate, errors, duration)
per route or dependency, and resource utilization, which gives saturation per pod,
container or host. Everything else in a request is counted as ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

SERVER = 2  # same numbers as span kinds, so metric rows and span rows share a column meaning
CLIENT = 3


@dataclass(frozen=True, slots=True)
class RedSource:
    kind: int  # SERVER: a route; CLIENT: a dependency
    default_unit: str  # when the metric's own unit field is empty or unknown


# Current names (seconds) and the older ones (milliseconds) that many agents still send.
RED_SOURCES: dict[str, RedSource] = {
    "http.server.request.duration": RedSource(SERVER, "s"),
    "http.server.duration": RedSource(SERVER, "ms"),
    "rpc.server.call.duration": RedSource(SERVER, "s"),
    "rpc.server.duration": RedSource(SERVER, "ms"),
    "http.client.request.duration": RedSource(CLIENT, "s"),
    "http.client.duration": RedSource(CLIENT, "ms"),
    "rpc.client.call.duration": RedSource(CLIENT, "s"),
    "rpc.client.duration": RedSource(CLIENT, "ms"),
}

MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "\u00b5s": 1e-3, "ns": 1e-6, "min": 60_000.0}

# Resource kinds a pod, container or host can saturate.
CPU = "cpu"
MEMORY = "memory"

# How a utilization source's value is to be read.
RATIO = "ratio"  # already a fraction of its limit (0..1)
USAGE = "usage"  # cores or bytes, divided by a LIMIT of the same pod or container
LIMIT = "limit"  # cores or bytes


@dataclass(frozen=True, slots=True)
class UtilizationSource:
    resource: str  # CPU or MEMORY
    measure: str  # RATIO, USAGE or LIMIT
    per_container: bool = False  # one series per container of the pod (k8s.container.name)
    scale: float = 1.0  # e.g. 0.01 for sources that report percent
    # Per-state gauges (system.cpu.utilization{state=idle|user|...}): only these states
    # count as in use; None means every point counts.
    busy_states: frozenset[str] | None = None
    per_cpu: bool = False  # one point per logical CPU: the series is their mean


_CPU_BUSY = frozenset({"user", "system", "nice", "interrupt", "softirq", "steal", "kernel"})
_MEMORY_USED = frozenset({"used"})

UTILIZATION_SOURCES: dict[str, UtilizationSource] = {
    # Host and process, against the whole machine (hostmetrics, system-metrics instrumentations).
    "system.cpu.utilization": UtilizationSource(CPU, RATIO, busy_states=_CPU_BUSY, per_cpu=True),
    "process.cpu.utilization": UtilizationSource(CPU, RATIO),
    "system.memory.utilization": UtilizationSource(MEMORY, RATIO, busy_states=_MEMORY_USED),
    "process.memory.utilization": UtilizationSource(MEMORY, RATIO),
    # Kubernetes, against the pod's or container's limit (kubeletstats; semconv spelling too).
    "k8s.pod.cpu_limit_utilization": UtilizationSource(CPU, RATIO),
    "k8s.pod.memory_limit_utilization": UtilizationSource(MEMORY, RATIO),
    "k8s.container.cpu_limit_utilization": UtilizationSource(CPU, RATIO, per_container=True),
    "k8s.container.memory_limit_utilization": UtilizationSource(MEMORY, RATIO, per_container=True),
    "k8s.container.cpu.limit.utilization": UtilizationSource(CPU, RATIO, per_container=True),
    # Usage in cores or bytes, divided by the limits below.
    "k8s.pod.cpu.utilization": UtilizationSource(CPU, USAGE),  # kubeletstats, deprecated: cores
    "k8s.pod.cpu.usage": UtilizationSource(CPU, USAGE),
    "k8s.pod.memory.working_set": UtilizationSource(MEMORY, USAGE),
    "container.cpu.usage": UtilizationSource(CPU, USAGE, per_container=True),
    "container.memory.working_set": UtilizationSource(MEMORY, USAGE, per_container=True),
    # dockerstats reports percent of one core; its limit comes as container.cpu.limit.
    "container.cpu.utilization": UtilizationSource(CPU, USAGE, per_container=True, scale=0.01),
    "container.memory.percent": UtilizationSource(MEMORY, RATIO, per_container=True, scale=0.01),
    "k8s.container.cpu_limit": UtilizationSource(CPU, LIMIT, per_container=True),
    "k8s.container.cpu.limit": UtilizationSource(CPU, LIMIT, per_container=True),
    "k8s.container.memory_limit": UtilizationSource(MEMORY, LIMIT, per_container=True),
    "k8s.container.memory.limit": UtilizationSource(MEMORY, LIMIT, per_container=True),
    "container.cpu.limit": UtilizationSource(CPU, LIMIT, per_container=True),
    "container.memory.usage.limit": UtilizationSource(MEMORY, LIMIT, per_container=True),
}

STATE_KEYS = ("state", "cpu.mode", "system.cpu.state", "system.memory.state")
CPU_KEYS = ("cpu", "cpu.logical_number", "system.cpu.logical_number")
CONTAINER_KEYS = ("k8s.container.name", "container.name")
