"""Slow and half-open clients against the OTLP/HTTP receiver (uvicorn underneath): they
cost no thread, valid exports are still answered, and the header and body deadlines
close what never finishes."""
from __future__ import annotations

import http.client
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from otel_ai.httpserver import HttpLimits
from otel_ai.receiver.http_server import OtlpHttpReceiver
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.testing.consumers import RecordingConsumer
from otel_ai.testing.harness import wait_for
from test_receiver_http import one_span_request

HALF_OPEN = 2000
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 0.5
HALF_HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    limits = HttpLimits(header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S)
    receiver = OtlpHttpReceiver(RecordingConsumer(), SelfMetrics(), port=0, limits=limits)
    receiver.port = receiver.start()
    yield receiver
    receiver.stop(grace_s=0)


def export(port: int) -> tuple[int, float]:
    body = one_span_request().SerializeToString()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    return response.status, elapsed


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_open_connections_cost_no_threads_and_are_closed_by_the_header_deadline(receiver) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * HALF_OPEN + 256  # both ends live in this process
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    threads_before = threading.active_count()
    sockets = []
    try:
        for _ in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", receiver.port))
            sock.sendall(HALF_HEAD)  # headers never finished
            sockets.append(sock)
        wait_for("the server to hold every connection", lambda: receiver.server.connections >= HALF_OPEN)
        held_at = time.monotonic()

        status, elapsed = export(receiver.port)
        threads_while_held = threading.active_count()

        assert status == 200
        assert time.monotonic() - held_at < HEADER_TIMEOUT_S  # the half-open ones were still open
        assert threads_while_held <= threads_before + receiver.server.limits.handler_threads
        print(f"\n{HALF_OPEN} half-open connections held: a valid export answered in {elapsed * 1e3:.1f} ms; "
              f"threads {threads_before} before, {threads_while_held} while held")

        wait_for("the header deadline to close them", lambda: receiver.server.connections == 0,
                 timeout_s=HEADER_TIMEOUT_S + 10)
        closed = sum(closed_by_server(sock) for sock in sockets)
        assert closed == HALF_OPEN
        print(f"all {closed} closed by the server {time.monotonic() - held_at:.1f} s after they were held "
              f"(header deadline {HEADER_TIMEOUT_S:g} s)")
    finally:
        for sock in sockets:
            sock.close()


def test_a_slow_head_on_a_kept_alive_connection_is_closed_too(receiver) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    connection.request("POST", "/v1/traces", one_span_request().SerializeToString(),
                       {"Content-Type": "application/x-protobuf"})
    assert connection.getresponse().read() is not None
    connection.sock.sendall(HALF_HEAD)  # the next request's head, never finished
    started = time.monotonic()
    wait_for("the connection to be closed", lambda: closed_by_server(connection.sock),
             timeout_s=HEADER_TIMEOUT_S + 10)
    assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.5
    connection.close()


def test_a_body_that_stops_arriving_is_408(receiver) -> None:
    sock = socket.create_connection(("127.0.0.1", receiver.port))
    sock.sendall(HALF_HEAD + b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10)
    sock.settimeout(BODY_TIMEOUT_S + 10)
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert receiver.metrics.registry.get_sample_value(
        "otel_ai_export_requests_total", {"transport": "http", "outcome": "timeout"}) == 1


def test_keep_alive_serves_many_requests_on_one_connection(receiver) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    body = one_span_request().SerializeToString()
    for _ in range(5):
        connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        assert connection.getresponse().read() is not None
    local_port = connection.sock.getsockname()[1]
    connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    assert connection.getresponse().status == 200
    assert connection.sock.getsockname()[1] == local_port  # the same connection throughout
    connection.close()
    assert len(receiver.consumer.requests) == 6


def test_beyond_the_connection_cap_requests_get_503(tmp_path) -> None:
    receiver = OtlpHttpReceiver(RecordingConsumer(), SelfMetrics(), port=0, limits=HttpLimits(max_connections=3))
    port = receiver.start()
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        wait_for("three held connections", lambda: receiver.server.connections >= 3)
        status, _ = export(port)
        assert status == 503
    finally:
        for sock in held:
            sock.close()
        receiver.stop(grace_s=0)


def test_an_oversize_request_head_is_refused(receiver) -> None:
    sock = socket.create_connection(("127.0.0.1", receiver.port))
    sock.sendall(HALF_HEAD + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
    sock.settimeout(10)
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert sock.recv(4096) == b""  # and closed
    sock.close()
    assert receiver.consumer.requests == []


def test_stop_lets_a_request_in_flight_finish_and_closes_idle_connections() -> None:
    entered = threading.Event()

    class SlowConsumer(RecordingConsumer):
        def consume(self, body: bytes, transport: str, encoding: str = "protobuf"):
            entered.set()
            time.sleep(0.5)
            return super().consume(body, transport)

    receiver = OtlpHttpReceiver(SlowConsumer(), SelfMetrics(), port=0)
    port = receiver.start()
    idle = socket.create_connection(("127.0.0.1", port))
    answers: list[int] = []
    in_flight = threading.Thread(target=lambda: answers.append(export(port)[0]))
    in_flight.start()
    assert entered.wait(5)

    receiver.stop(grace_s=5)
    in_flight.join(5)

    assert answers == [200]
    assert closed_by_server(idle)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)  # no longer listening
    idle.close()
