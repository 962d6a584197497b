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
import http.client
import json
import queue
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH = "/v1/traces"
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


def _load(batch_file: str) -> list[_Batch]:
    batches = [_Batch(b) for b in read_batches(batch_file)]
    batches = [b for b in batches if b.span_count]
    if not batches:
        raise SystemExit("bench client: no batches to send")
    return batches


def _result(sent_spans: int, issued_spans: int, requests: int, errors: int, error_messages: list[str],
            retries: int, partial_rejected: int, wall: float, latencies: list[float]) -> dict:
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


def run_client(target: str, batch_file: str, spans: int, in_flight: int, offset: int = 0,
               max_retries: int = 50, wait_for_go=None) -> dict:
    batches = _load(batch_file)
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
    return _result(sent_spans, issued_spans, requests, errors, error_messages, retries, partial_rejected,
                   wall, latencies)


def run_http_client(target: str, batch_file: str, spans: int, in_flight: int, offset: int = 0,
                    max_retries: int = 50, wait_for_go=None) -> dict:
    """The same load over OTLP/HTTP protobuf: one keep-alive connection per request in flight."""
    batches = _load(batch_file)
    host, port = target.rsplit(":", 1)
    lock = threading.Lock()  # re-timing mutates the shared protos
    state = {"next": offset % len(batches), "issued": 0}
    latencies: list[float] = []
    counts = {"sent": 0, "requests": 0, "errors": 0, "retries": 0, "partial": 0}
    error_messages: list[str] = []

    def next_payload() -> tuple[bytes, int] | None:
        with lock:
            if state["issued"] >= spans:
                return None
            b = batches[state["next"]]
            state["next"] = (state["next"] + 1) % len(batches)
            state["issued"] += b.span_count
            return b.payload(time.time_ns()), b.span_count

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        while (item := next_payload()) is not None:
            payload, n = item
            for attempt in range(max_retries + 1):
                t0 = time.perf_counter()
                try:
                    connection.request("POST", HTTP_PATH, payload, {"Content-Type": "application/x-protobuf"})
                    response = connection.getresponse()
                    body = response.read()
                except OSError as exc:
                    connection.close()
                    status, body, message = 0, b"", str(exc)
                else:
                    status, message = response.status, f"HTTP {response.status}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        counts["sent"] += n
                        counts["requests"] += 1
                        counts["partial"] += ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
                        latencies.append(elapsed)
                        break
                    if status in (0, 429, 503) and attempt < max_retries:
                        counts["retries"] += 1
                    else:
                        counts["errors"] += 1
                        if len(error_messages) < 5:
                            error_messages.append(message)
                        break
                time.sleep(min(1.0, 0.02 * (2 ** min(attempt, 6))))
        connection.close()

    if wait_for_go is not None:
        wait_for_go()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="bench-http") as pool:
        for future in [pool.submit(worker) for _ in range(in_flight)]:
            future.result()
    wall = time.perf_counter() - started
    return _result(counts["sent"], state["issued"], counts["requests"], counts["errors"], error_messages,
                   counts["retries"], counts["partial"], wall, latencies)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="otel_ai.bench_client")
    p.add_argument("--target", required=True)
    p.add_argument("--batches", required=True)
    p.add_argument("--spans", type=int, required=True)
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--http", action="store_true", help="OTLP/HTTP protobuf instead of OTLP/gRPC")
    args = p.parse_args(argv)

    def wait_for_go() -> None:
        print("READY", flush=True)
        sys.stdin.readline()

    result = (run_http_client if args.http else run_client)(args.target, args.batches, args.spans, max(1, args.in_flight), args.offset,
                        wait_for_go=wait_for_go)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
