"""Interning of OTLP resources (one pod, host or process of a service) into dense ids.

Spans carry the id of the resource that sent them (``SpanBatch.resource_id``), so the
stages after decode can group by pod or version with numpy instead of reading
attributes per span. The table is capped: once full, new resources share
``OVERFLOW`` and lose their per-pod identity (their service still counts).
"""
from __future__ import annotations

from dataclasses import dataclass

OVERFLOW = 0
INSTANCE_KEYS = ("k8s.pod.name", "service.instance.id", "host.name", "container.id")


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    service: str
    service_id: int
    instance: str  # k8s.pod.name, else service.instance.id, host.name or container.id; "" if none
    version: str  # service.version, "" if none
    pairs: tuple  # interned (key, value) suspect pairs of the resource


class ResourceTable:
    def __init__(self, max_resources: int = 65_535) -> None:
        self.max_resources = max_resources
        self.resources: list[ResourceInfo] = [ResourceInfo("(other resources)", -1, "", "", ())]
        self._ids: dict[tuple, int] = {}
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self.resources)

    def intern(self, info: ResourceInfo) -> int:
        """The id of a resource, keyed by what identifies it (not by its exact bytes,
        which change when an SDK adds an attribute)."""
        key = (info.service, info.instance, info.version, info.pairs)
        rid = self._ids.get(key)
        if rid is not None:
            return rid
        if len(self.resources) >= self.max_resources:
            self.overflowed += 1
            return OVERFLOW
        rid = len(self.resources)
        self.resources.append(info)
        self._ids[key] = rid
        return rid

    def __getitem__(self, rid: int) -> ResourceInfo:
        return self.resources[rid]


def instance_of(attributes: dict[str, str]) -> str:
    for key in INSTANCE_KEYS:
        value = attributes.get(key)
        if value:
            return value
    return ""
