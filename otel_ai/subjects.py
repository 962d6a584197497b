"""Interning of routes, dependencies and instances into dense integer ids, with caps.

Window state is indexed by these ids, so the table is what bounds memory: at most
``max_routes_per_service`` routes per service (the rest share one overflow route) and
``max_subjects`` in all (the rest share one global overflow subject).
"""
from __future__ import annotations

import numpy as np

from otel_ai.model import DEPENDENCY, INSTANCE, ROUTE, Subject

OVERFLOW_ROUTE = "(other routes)"
OVERFLOW_SERVICE = "(other services)"
# Subject kinds as the detectors' numpy filter sees them (WindowView.kinds).
KIND_CODES = {ROUTE: 0, DEPENDENCY: 1, INSTANCE: 2}


class SubjectTable:
    def __init__(self, max_routes_per_service: int = 2000, max_subjects: int = 20000):
        self.max_routes_per_service = max_routes_per_service
        self.max_subjects = max_subjects
        self.subjects: list[Subject] = []
        self._kind_codes: list[int] = []
        self._kinds_cache = np.zeros(0, dtype=np.int8)
        self._ids: dict[tuple, int] = {}
        self._routes_per_service: dict[str, int] = {}
        self.overflowed = 0  # lookups that landed in an overflow subject
        # Services by dense id (SpanBatch.service_id): the caller side of every edge.
        self.services: list[str] = []
        self._service_ids: dict[str, int] = {}
        self._global_overflow = self._add(Subject(ROUTE, OVERFLOW_SERVICE, "", OVERFLOW_ROUTE), ("global-overflow",))

    def __len__(self) -> int:
        return len(self.subjects)

    def _add(self, subject: Subject, key: tuple) -> int:
        sid = len(self.subjects)
        self.subjects.append(subject)
        self._kind_codes.append(KIND_CODES[subject.kind])
        self._ids[key] = sid
        return sid

    def route(self, service: str, method: str, route: str) -> int:
        key = (service, method, route)
        sid = self._ids.get(key)
        if sid is not None:
            return sid
        return self._new_route(service, method, route, key)

    def _new_route(self, service: str, method: str, route: str, key: tuple) -> int:
        used = self._routes_per_service.get(service, 0)
        if used >= self.max_routes_per_service:
            self.overflowed += 1
            overflow_key = (service, "", OVERFLOW_ROUTE)
            sid = self._ids.get(overflow_key)
            if sid is None:
                sid = self._add_capped(Subject(ROUTE, service, "", OVERFLOW_ROUTE), overflow_key)
            return sid
        sid = self._add_capped(Subject(ROUTE, service, method, route), key)
        if sid != self._global_overflow:
            self._routes_per_service[service] = used + 1
        return sid

    def dependency(self, name: str) -> int:
        key = ("\x00dep", name)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._add_capped(Subject(DEPENDENCY, name, "", name), key)
        return sid

    def instance(self, service: str, name: str) -> int:
        """A pod, process or host of a service (resource metrics' saturation series)."""
        key = ("\x00instance", service, name)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._add_capped(Subject(INSTANCE, service, "", name), key)
        return sid

    def _add_capped(self, subject: Subject, key: tuple) -> int:
        if len(self.subjects) >= self.max_subjects:
            self.overflowed += 1
            return self._global_overflow
        return self._add(subject, key)

    def service_id(self, name: str) -> int:
        """Dense id of a service name; -1 once max_subjects services are known."""
        sid = self._service_ids.get(name)
        if sid is None:
            if len(self.services) >= self.max_subjects:
                return -1
            sid = self._service_ids[name] = len(self.services)
            self.services.append(name)
        return sid

    def lookup(self, subject: Subject) -> int | None:
        """Id of a subject restored from the store, if it has window state."""
        if subject.kind == DEPENDENCY:
            return self._ids.get(("\x00dep", subject.service))
        if subject.kind == INSTANCE:
            return self._ids.get(("\x00instance", subject.service, subject.route))
        return self._ids.get((subject.service, subject.method, subject.route))

    def kinds(self) -> np.ndarray:
        """Per subject id: 0 route, 1 dependency, 2 instance (KIND_CODES: the detectors'
        subject filter)."""
        if self._kinds_cache.shape[0] != len(self._kind_codes):
            self._kinds_cache = np.array(self._kind_codes, dtype=np.int8)
        return self._kinds_cache
