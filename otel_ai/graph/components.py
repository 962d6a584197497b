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
with three fields, are interned with one ``np.unique`` and a binary search in the sorted
keys: never Python per span or per component. The table is capped: past
``max_components`` new components share id 0, ``(other components)``. Its columns are
allocated for the cap at start (20 bytes a component): a dict and a list had grown by
~1.7 MiB over the first slots of a 10k-route bench, as the join met new edges.
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
        self._keys = np.full(max_components, 0, np.uint64)  # by id; id 0: the overflow component
        self._n = 1
        self._sorted_keys = np.full(max_components, 0, np.uint64)  # the interned keys, sorted, with their ids
        self._sorted_ids = np.full(max_components, 0, np.int32)
        self._dense = {ROUTE: np.zeros(0, dtype=np.int32), POD: np.zeros(0, dtype=np.int32)}  # id + 1; 0 unknown
        self.overflowed = 0

    def __len__(self) -> int:
        return self._n

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
        found = self._find(unique)
        new = np.flatnonzero(found < 0)
        if new.shape[0]:
            room = min(new.shape[0], self.max_components - self._n)
            self.overflowed += new.shape[0] - room
            found[new[room:]] = OVERFLOW
            self._intern(unique[new[:room]])
            found[new[:room]] = np.arange(self._n - room, self._n, dtype=np.int32)
        return found[inverse.reshape(-1)]

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Each (sorted, distinct) key's id, -1 where not interned."""
        held = self._n - 1
        if held == 0:
            return np.full(keys.shape[0], -1, np.int32)
        sorted_keys = self._sorted_keys[:held]
        at = np.minimum(np.searchsorted(sorted_keys, keys), held - 1)
        return np.where(sorted_keys[at] == keys, self._sorted_ids[at], -1).astype(np.int32)

    def _intern(self, keys: np.ndarray) -> None:
        """New ids for these keys (sorted, distinct, none interned), in their order."""
        first, held = self._n, self._n - 1
        count = keys.shape[0]
        self._keys[first:first + count] = keys
        merged_keys = np.concatenate((self._sorted_keys[:held], keys))
        merged_ids = np.concatenate((self._sorted_ids[:held], np.arange(first, first + count, dtype=np.int32)))
        order = np.argsort(merged_keys, kind="stable")
        self._sorted_keys[:held + count] = merged_keys[order]
        self._sorted_ids[:held + count] = merged_ids[order]
        self._n += count

    def id_of(self, key: int) -> int | None:
        found = int(self._find(np.array([key], np.uint64))[0])
        return None if found < 0 else found

    def fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per component id: (kind, a, b, c) as int64 arrays. ROUTE: a = route subject id;
        POD: a = resource id; EDGE: a = caller route (or SERVICE_FLAG | service id),
        b = dependency subject id, c = callee route (NONE: uninstrumented)."""
        keys = self._keys[:self._n]
        return ((keys >> np.uint64(60)).astype(np.int64), ((keys >> np.uint64(40)) & np.uint64(_MASK)).astype(np.int64),
                ((keys >> np.uint64(20)) & np.uint64(_MASK)).astype(np.int64), (keys & np.uint64(_MASK)).astype(np.int64))

    def nbytes(self) -> int:
        return self._keys.nbytes + self._sorted_keys.nbytes + self._sorted_ids.nbytes
