"""Load-generating client for ``otel-ai bench``; runs in its own process.

Protocol with the parent (``otel_ai.bench``): the client loads the batch file
(length-prefixed serialized ``ExportTraceServiceRequest`` messages), parses it once,
connects, prints ``READY`` on stdout and waits for a line on stdin. It then sends the
batches round-robin until its share of spans is sent, keeping ``--in-flight``
requests outstanding, and prints one JSON object with its results on stdout.

Before each send every timestamp in the batch is shifted so that the batch ends at
the current wall-clock time: replayed batches then look like live traffic and are
neither late nor too old for the server.
"""
from __future__ import annotations

import argparse
import json
import queue
import struct
import sys
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LEN = struct.Struct("<I")


def write_batches(path: str | Path, blobs: list[bytes]) -> None:
    with open(path, "wb") as f:
        for blob in blobs:
            f.write(_LEN.pack(len(blob)))
            f.write(blob)


def read_batches(path: str | Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        pos += 4
        out.append(data[pos:pos + n])
        pos += n
    return out


class _Batch:
    """One parsed request plus what is needed to re-time it cheaply."""

    __slots__ = ("request", "spans", "events", "span_count", "end_ns", "shift")

    def __init__(self, blob: bytes):
        self.request = ExportTraceServiceRequest.FromString(blob)
        self.spans = [s for rs in self.request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        self.events = [e for s in self.spans for e in s.events]
        self.span_count = len(self.spans)
        self.end_ns = max((s.end_time_unix_nano for s in self.spans), default=0)
        self.shift = 0  # delta already applied to the protos

    def payload(self, now_ns: int) -> bytes:
        delta = now_ns - self.end_ns - self.shift
        for s in self.spans:
            s.start_time_unix_nano += delta
            s.end_time_unix_nano += delta
        for e in self.events:
            e.time_unix_nano += delta
        self.shift += delta
        return self.request.SerializeToString()


def run_client(target: str, batch_file: str, spans: int, in_flight: int, offset: int = 0,
               max_retries: int = 50, wait_for_go=None) -> dict:
    batches = [_Batch(b) for b in read_batches(batch_file)]
    batches = [b for b in batches if b.span_count]
    if not batches:
        raise SystemExit("bench client: no batches to send")
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    grpc.channel_ready_future(channel).result(timeout=30)
    export = channel.unary_unary(METHOD, request_serializer=None,
                                 response_deserializer=ExportTraceServiceResponse.FromString)
    if wait_for_go is not None:
        wait_for_go()

    done: queue.Queue = queue.Queue()
    latencies: list[float] = []
    sent_spans = 0  # spans in requests answered OK
    issued_spans = 0  # spans in requests started (the share counts these)
    requests = errors = retries = partial_rejected = 0
    error_messages: list[str] = []
    outstanding = 0
    i = offset % len(batches)
    started = time.perf_counter()

    def submit(payload: bytes, n: int, attempt: int) -> None:
        t0 = time.perf_counter()
        fut = export.future(payload, timeout=60)
        fut.add_done_callback(lambda f: done.put((f, t0, payload, n, attempt)))

    while issued_spans < spans or outstanding:
        if issued_spans < spans and outstanding < in_flight:
            b = batches[i]
            i = (i + 1) % len(batches)
            submit(b.payload(time.time_ns()), b.span_count, 0)
            issued_spans += b.span_count
            outstanding += 1
            continue
        fut, t0, payload, n, attempt = done.get()
        elapsed = time.perf_counter() - t0
        exc = fut.exception()
        if exc is None:
            outstanding -= 1
            requests += 1
            latencies.append(elapsed)
            sent_spans += n
            resp = fut.result()
            if resp.HasField("partial_success"):
                partial_rejected += resp.partial_success.rejected_spans
            continue
        code = exc.code() if isinstance(exc, grpc.RpcError) else None
        if code == grpc.StatusCode.UNAVAILABLE and attempt < max_retries:
            retries += 1
            time.sleep(min(1.0, 0.02 * (2 ** min(attempt, 6))))
            submit(payload, n, attempt + 1)  # still outstanding
            continue
        outstanding -= 1
        errors += 1
        if len(error_messages) < 5:
            error_messages.append(f"{code}: {exc.details() if isinstance(exc, grpc.RpcError) else exc}")
    wall = time.perf_counter() - started
    channel.close()
    return {
        "spans_sent": sent_spans,
        "spans_issued": issued_spans,
        "requests": requests,
        "errors": errors,
        "error_messages": error_messages,
        "retries": retries,
        "partial_rejected_spans": partial_rejected,
        "wall_s": wall,
        "latencies_s": latencies,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="otel_ai.bench_client")
    p.add_argument("--target", required=True)
    p.add_argument("--batches", required=True)
    p.add_argument("--spans", type=int, required=True)
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--offset", type=int, default=0)
    args = p.parse_args(argv)

    def wait_for_go() -> None:
        print("READY", flush=True)
        sys.stdin.readline()

    result = run_client(args.target, args.batches, args.spans, max(1, args.in_flight), args.offset,
                        wait_for_go=wait_for_go)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
