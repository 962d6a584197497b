"""The parts of the call graph the join measures, interned into dense ids.

A component is one of:

* a **route**: the SERVER spans of one route (``SubjectTable`` id): own (self) time and
  errors that start there;
* a **pod**: the SERVER spans one resource (pod/process, ``ResourceTable`` id) served,
  across its routes: its own time says whether one pod (or one version) is the slow one;
* an **edge**: the CLIENT spans from one caller route to one dependency, and on to one
  callee route where the callee is instrumented. Its own time is the client duration
  minus the callee's server span: the wire, the callee's queue, its load balancer. For
  an uninstrumented callee (a database, an external API) it is the whole call.

Ids are keyed by one uint64 per component (kind and up to three 20-bit fields). Routes
and pods are looked up in dense arrays indexed by their subject or resource id; edges,
with three fields, are interned with one ``np.unique`` and a dict lookup per distinct
edge: never Python per span. The table is capped: past ``max_components`` new
components share id 0, ``(other components)``.
"""
from __future__ import annotations

import numpy as np

ROUTE, POD, EDGE = 1, 2, 3
KIND_NAMES = {0: "overflow", ROUTE: "route", POD: "pod", EDGE: "edge"}
FIELD_BITS = 20
_MASK = (1 << FIELD_BITS) - 1
NONE = _MASK  # no callee route (uninstrumented callee) or an id too large to key
SERVICE_FLAG = 1 << (FIELD_BITS - 1)  # caller field holds a service id: the calling route is unknown
MAX_ID = SERVICE_FLAG - 1
OVERFLOW = 0
MAX_COMPONENTS = 65_536


def _field(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    return np.where((ids >= 0) & (ids <= MAX_ID), ids, NONE).astype(np.uint64)


def route_keys(route: np.ndarray) -> np.ndarray:
    return np.uint64(ROUTE << 60) | (_field(route) << np.uint64(40))


def pod_keys(resource: np.ndarray) -> np.ndarray:
    return np.uint64(POD << 60) | (_field(resource) << np.uint64(40))


def edge_keys(caller_route: np.ndarray, caller_service: np.ndarray, dependency: np.ndarray,
              callee_route: np.ndarray) -> np.ndarray:
    """caller_route -1 (unknown: the parent was not a SERVER span of the caller) keys the
    edge by the calling service instead."""
    caller = np.where(caller_route >= 0, _field(caller_route), _field(caller_service) | np.uint64(SERVICE_FLAG))
    return (np.uint64(EDGE << 60) | (caller << np.uint64(40)) | (_field(dependency) << np.uint64(20))
            | _field(callee_route))


class ComponentTable:
    def __init__(self, max_components: int = MAX_COMPONENTS):
        self.max_components = max_components
        self._ids: dict[int, int] = {}
        self._keys: list[int] = [0]  # id 0: the overflow component
        self._arrays = np.zeros(0, dtype=np.uint64)
        self._dense = {ROUTE: np.zeros(0, dtype=np.int32), POD: np.zeros(0, dtype=np.int32)}  # id + 1; 0 unknown
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._keys)

    def route_ids(self, route: np.ndarray) -> np.ndarray:
        return self._dense_ids(ROUTE, route, route_keys)

    def pod_ids(self, resource: np.ndarray) -> np.ndarray:
        return self._dense_ids(POD, resource, pod_keys)

    def _dense_ids(self, kind: int, index: np.ndarray, keys_of) -> np.ndarray:
        index = np.where((index >= 0) & (index <= MAX_ID), index, MAX_ID + 1)
        table = self._dense[kind]
        top = int(index.max(initial=-1)) + 1
        if top > table.shape[0]:
            table = self._dense[kind] = np.concatenate((table, np.zeros(max(top, 2 * table.shape[0]) - table.shape[0],
                                                                         dtype=np.int32)))
        found = table[index] - 1
        missing = found < 0
        if missing.any():
            new = np.unique(index[missing])
            table[new] = self.ids(keys_of(new)) + 1
            found = table[index] - 1
        return found

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """Dense id per key (int32), interning new components while there is room."""
        if keys.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        unique, inverse = np.unique(keys, return_inverse=True)
        found = np.empty(unique.shape[0], dtype=np.int32)
        ids = self._ids
        for i, key in enumerate(unique.tolist()):
            cid = ids.get(key)
            if cid is None:
                if len(self._keys) >= self.max_components:
                    self.overflowed += 1
                    cid = OVERFLOW
                else:
                    cid = ids[key] = len(self._keys)
                    self._keys.append(key)
            found[i] = cid
        return found[inverse.reshape(-1)]

    def id_of(self, key: int) -> int | None:
        return self._ids.get(int(key))

    def fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per component id: (kind, a, b, c) as int64 arrays. ROUTE: a = route subject id;
        POD: a = resource id; EDGE: a = caller route (or SERVICE_FLAG | service id),
        b = dependency subject id, c = callee route (NONE: uninstrumented)."""
        if self._arrays.shape[0] != len(self._keys):
            self._arrays = np.array(self._keys, dtype=np.uint64)
        keys = self._arrays
        return ((keys >> np.uint64(60)).astype(np.int64), ((keys >> np.uint64(40)) & np.uint64(_MASK)).astype(np.int64),
                ((keys >> np.uint64(20)) & np.uint64(_MASK)).astype(np.int64), (keys & np.uint64(_MASK)).astype(np.int64))

    def nbytes(self) -> int:
        """Approximate memory: the dict and list of keys (~120 B per component)."""
        return 120 * len(self._keys) + self._arrays.nbytes
