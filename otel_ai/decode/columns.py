"""Rows read from a request -> the SpanBatch columns, in numpy: time validation, error
classification, id columns, resource columns. The Python readers use this; the native
reader does the same in C (`_otlp.c`, put_row), and the differential tests hold the two
equal."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from otel_ai.decode.contract import STATUS_ERROR, InternalSpans, SpanBatch, TimeBounds

# gRPC codes that are the server's fault (OTel RPC semantic conventions).
GRPC_SERVER_ERRORS = np.array([2, 4, 12, 13, 14, 15])
INT64_MAX = 2**63 - 1


@dataclass(slots=True)
class SpanRows:
    """One row per counted span, as a Python reader found it (before validation).

    Times past int64 are already 0 (invalid); statuses are the raw attribute integers."""

    sid: np.ndarray  # subject id
    kind: np.ndarray
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    status: np.ndarray  # Status.code
    http_status: np.ndarray
    grpc_status: np.ndarray  # -1: none
    resend: np.ndarray
    weight: np.ndarray  # float32
    sampling_attribute: np.ndarray  # bool
    trace_key: np.ndarray  # uint64
    sample_byte: np.ndarray  # last byte of the trace id (0 if none)
    span_id: np.ndarray  # uint64
    parent_span_id: np.ndarray  # uint64
    block_starts: np.ndarray  # first row of each ResourceSpans that is not otel-ai's own
    blocks: list  # (ResourceInfo, resource id) per block
    total: int  # spans in the request (own ones excluded)
    own: int  # spans under otel-ai's own resources
    internal: InternalSpans | None = None  # the INTERNAL spans (not rows), for re-parenting


@dataclass(slots=True)
class ReadResult:
    """What every reader hands to the capture stage: the batch (captures still empty) and,
    per batch row, what selection needs that the batch does not carry."""

    batch: SpanBatch
    sample_byte: np.ndarray  # last byte of the trace id: the 1-in-N capture sample
    block: np.ndarray  # index into blocks: the resource that sent the row
    blocks: list  # ResourceInfo per block
    details: Callable  # captures.DetailsReader over batch rows


def reject_message(invalid: int, out_of_range: int) -> str:
    reasons = []
    if invalid:
        reasons.append(f"{invalid} with end before start or missing times")
    if out_of_range:
        reasons.append(f"{out_of_range} with end time too far from now")
    return ("rejected spans: " + "; ".join(reasons)) if reasons else ""


def internal_spans(ids: list[tuple[bytes, bytes, bytes]]) -> InternalSpans:
    """From (trace id, span id, parent span id) bytes; spans without a valid id are left out."""
    span_id = id64([i[1] for i in ids])
    known = np.flatnonzero(span_id != 0)
    return InternalSpans(trace_keys([ids[i][0] for i in known]), span_id[known], id64([ids[i][2] for i in known]))


MAX_INTERNAL_DEPTH = 8  # nested INTERNAL spans followed up to the first span that is a row


def span_keys(trace_key: np.ndarray, span_id: np.ndarray) -> np.ndarray:
    """One uint64 per (trace, span id), for sorting and joining spans by id."""
    with np.errstate(over="ignore"):
        return trace_key ^ (span_id * _SPAN_MIX)


def skip_internal_parents(batch: SpanBatch, internal: InternalSpans | None) -> None:
    """A row whose parent is an INTERNAL span of the same request gets that span's parent
    instead, through nested ones: INTERNAL spans are not rows, and the service graph needs
    each CLIENT span's calling route (a SERVER span), not the method that made the call.
    An INTERNAL parent sent in another request is not seen: such a call keeps it."""
    if internal is None or internal.span_id.shape[0] == 0 or len(batch) == 0:
        return
    keys = span_keys(internal.trace_key, internal.span_id)
    order = np.argsort(keys, kind="stable")
    keys, grandparent = keys[order], internal.parent_span_id[order]
    parent = batch.parent_span_id
    for _ in range(MAX_INTERNAL_DEPTH):
        wanted = span_keys(batch.trace_key, parent)
        at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
        hit = (parent != 0) & (keys[at] == wanted)
        if not hit.any():
            break
        parent = np.where(hit, grandparent[at], parent)
    batch.parent_span_id = parent


def finish(batch: SpanBatch, own: int, internal: InternalSpans | None = None, reparented: bool = False,
           ends_ns: tuple[int, int] | None = None) -> SpanBatch:
    """The derived fields every reader sets the same way. reparented: the reader already
    did skip_internal_parents (the native one does it in C); ends_ns: (max, median) of
    end_ns, when the reader computed them (the native one does, in C)."""
    if not reparented:
        skip_internal_parents(batch, internal)
    if internal is not None and internal.span_id.shape[0]:
        batch.internal = internal  # for rows of other requests (the service graph's join)
    if len(batch):
        if ends_ns is None:
            ends_ns = int(batch.end_ns.max()), median_ns(batch.end_ns)
        batch.max_end_ns, batch.median_end_ns = ends_ns
    if own:
        batch.own = own
        batch.spans_total += own
    return batch


def median_ns(values: np.ndarray) -> int:
    """int(np.median(values)) for int64 values, without np.median's per-call overhead: the
    float64 mean of the middle one or two values, truncated, exactly as np.median does it."""
    n = values.shape[0]
    k = n // 2
    if n % 2:
        return int(float(np.partition(values, k)[k]))
    middle = np.partition(values, (k - 1, k))
    return int((float(middle[k - 1]) + float(middle[k])) / 2)


def to_batch(rows: SpanRows, bounds: TimeBounds | None) -> tuple[SpanBatch, np.ndarray]:
    """The batch of the accepted rows, and which rows were accepted."""
    n = rows.sid.shape[0]
    if n == 0:
        empty = np.zeros(0)
        batch = SpanBatch(empty.astype(np.int32), empty.astype(np.int64), empty, empty.astype(bool),
                          empty.astype(bool), spans_total=rows.total, ignored=rows.total)
        return finish(batch, rows.own, rows.internal), empty.astype(bool)
    start, end = rows.start, rows.end
    status, http_status, grpc_status = rows.status, rows.http_status, rows.grpc_status
    invalid = (end <= 0) | (start <= 0) | (end < start)
    n_invalid = int(invalid.sum())
    n_out_of_range = 0
    if bounds is not None:
        out_of_range = ~invalid & ((end < bounds.lowest_ns) | (end > bounds.highest_ns))
        n_out_of_range = int(out_of_range.sum())
        invalid |= out_of_range
    client_error = (http_status >= 400) & (http_status < 500)
    error = ((status == STATUS_ERROR) | (http_status >= 500)) & ~client_error
    has_grpc = grpc_status >= 0
    if has_grpc.any():
        server_fault = np.isin(grpc_status, GRPC_SERVER_ERRORS)
        flagged = has_grpc & (status == STATUS_ERROR)
        error = np.where(has_grpc, server_fault, error)
        client_error |= flagged & ~server_fault
    keep = ~invalid
    duration_ms = (end - start) / 1e6
    block_sizes = np.diff(np.append(rows.block_starts, n))
    service_id = np.repeat(np.array([b[0].service_id for b in rows.blocks], dtype=np.int32), block_sizes)
    resource_id = np.repeat(np.array([b[1] for b in rows.blocks], dtype=np.int32), block_sizes)
    batch = SpanBatch(
        subject_id=rows.sid[keep].astype(np.int32),
        end_ns=end[keep],
        duration_ms=duration_ms[keep],
        error=error[keep],
        client_error=client_error[keep],
        kind=rows.kind[keep].astype(np.int8),
        service_id=service_id[keep],
        resource_id=resource_id[keep],
        start_ns=start[keep],
        http_status=np.where((http_status > 0) & (http_status < 1000), http_status, 0)[keep].astype(np.int16),
        grpc_status=np.where((grpc_status >= 0) & (grpc_status < 128), grpc_status, -1)[keep].astype(np.int8),
        resend_count=np.clip(rows.resend, 0, 32767)[keep].astype(np.int16),
        weight=rows.weight[keep].astype(np.float32),
        sampling_attribute=rows.sampling_attribute[keep],
        trace_key=rows.trace_key[keep].astype(np.uint64),
        span_id=rows.span_id[keep].astype(np.uint64),
        parent_span_id=rows.parent_span_id[keep].astype(np.uint64),
        spans_total=rows.total,
        rejected=n_invalid + n_out_of_range,
        reject_message=reject_message(n_invalid, n_out_of_range),
        ignored=rows.total - n,
    )
    return finish(batch, rows.own, rows.internal), keep


def block_of_rows(block_starts: np.ndarray, n: int) -> np.ndarray:
    """Per row, the index of its block."""
    return np.repeat(np.arange(block_starts.shape[0]), np.diff(np.append(block_starts, n)))


_MIX = np.uint64(0x9E3779B97F4A7C15)
_SPAN_MIX = np.uint64(0xD6E8FEB86659FD93)


def id64(ids: list[bytes]) -> np.ndarray:
    """8-byte span ids as little-endian uint64; 0 for an absent or malformed id."""
    if all(len(i) == 8 for i in ids):
        return np.frombuffer(b"".join(ids), dtype="<u8").astype(np.uint64)
    return np.array([int.from_bytes(i, "little") if len(i) == 8 else 0 for i in ids], dtype=np.uint64)


def trace_keys(trace_ids: list[bytes]) -> np.ndarray:
    """A 64-bit key per 16-byte trace id (high half times a golden-ratio constant, xor the
    low half): collisions among the traces in flight are negligible, and joins can sort
    one uint64 column. 0 for a malformed id."""
    if all(len(t) == 16 for t in trace_ids):
        halves = np.frombuffer(b"".join(trace_ids), dtype="<u8").reshape(-1, 2)
    else:
        halves = np.array([(int.from_bytes(t[:8], "little"), int.from_bytes(t[8:], "little")) if len(t) == 16
                           else (0, 0) for t in trace_ids], dtype=np.uint64).reshape(-1, 2)
    with np.errstate(over="ignore"):
        return (halves[:, 0] * _MIX) ^ halves[:, 1]


def sample_bytes(trace_ids: list[bytes]) -> np.ndarray:
    """The last byte of each trace id (0 for an empty one)."""
    if all(len(t) == 16 for t in trace_ids):
        return np.frombuffer(b"".join(trace_ids), dtype=np.uint8).reshape(-1, 16)[:, 15].copy()
    return np.array([t[-1] if t else 0 for t in trace_ids], dtype=np.uint8)


_COLUMNS = tuple(f.name for f in fields(SpanBatch) if f.type == "np.ndarray")


def merge_batches(batches: list[SpanBatch]) -> SpanBatch:
    """One batch of several, in order: the later stages' numpy then runs once for all of
    them. Derived masks present in every batch are kept (a stateful counter such as
    Retries must see each span once); the others are recomputed on demand."""
    if len(batches) == 1:
        return batches[0]
    merged = SpanBatch(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in _COLUMNS})
    merged.spans_total = sum(b.spans_total for b in batches)
    merged.rejected = sum(b.rejected for b in batches)
    merged.ignored = sum(b.ignored for b in batches)
    merged.own = sum(b.own for b in batches)
    merged.captures = [c for b in batches for c in b.captures]
    shared = set(batches[0].derived).intersection(*(b.derived for b in batches[1:]))
    merged.derived = {name: np.concatenate([b.derived[name] for b in batches]) for name in shared}
    internal = [b.internal for b in batches if b.internal is not None]
    if internal:  # the service graph's join re-parents rows of later requests under these
        merged.internal = InternalSpans(*(np.concatenate([getattr(i, name) for i in internal])
                                          for name in ("trace_key", "span_id", "parent_span_id")))
    if len(merged):
        merged.max_end_ns = max(b.max_end_ns for b in batches if len(b))
        merged.median_end_ns = median_ns(merged.end_ns)
    return merged
