"""The columnar batch contract: every column decode promises, filled from real OTLP."""
from __future__ import annotations

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.decode import Decoder
from otel_ai.decode.columns import id64, trace_keys
from otel_ai.subjects import SubjectTable

T0 = 1_700_000_000_000_000_000
TRACE = bytes(range(16))


def _resource(request, service: str, pod: str, version: str = "1.0"):
    rs = request.resource_spans.add()
    for key, value in (("service.name", service), ("k8s.pod.name", pod), ("service.version", version)):
        rs.resource.attributes.add(key=key).value.string_value = value
    return rs.scope_spans.add()


def _span(scope, span_id: int, parent: int, kind: int, start_ms: int, end_ms: int, attrs=None):
    span = scope.spans.add(trace_id=TRACE, span_id=span_id.to_bytes(8, "little"), kind=kind, name="op",
                           start_time_unix_nano=T0 + start_ms * 1_000_000, end_time_unix_nano=T0 + end_ms * 1_000_000)
    if parent:
        span.parent_span_id = parent.to_bytes(8, "little")
    for key, value in (attrs or {}).items():
        attr = span.attributes.add(key=key)
        if isinstance(value, int):
            attr.value.int_value = value
        else:
            attr.value.string_value = value
    return span


def _decode(request):
    decoder = Decoder(SubjectTable())
    return decoder, decoder.decode(request.SerializeToString(), None)


def test_every_column_is_filled_for_a_two_service_trace():
    request = ExportTraceServiceRequest()
    frontend = _resource(request, "frontend", "frontend-7d9-abc")
    _span(frontend, 1, 0, 2, 0, 100, {"http.route": "/checkout", "http.response.status_code": 200})
    client = _span(frontend, 2, 1, 3, 10, 90, {"peer.service": "checkout", "http.response.status_code": 429})
    client.attributes.add(key="http.request.resend_count").value.int_value = 2
    _span(frontend, 99, 1, 1, 0, 5)  # INTERNAL: not counted
    checkout = _resource(request, "checkout", "checkout-5f4-xyz", version="2.0")
    _span(checkout, 3, 2, 2, 20, 80, {"http.route": "/pay", "http.response.status_code": 503})
    decoder, batch = _decode(request)

    assert len(batch) == 3 and batch.ignored == 1
    assert batch.kind.tolist() == [2, 3, 2]
    services = decoder.subjects.services
    assert [services[i] for i in batch.service_id] == ["frontend", "frontend", "checkout"]
    pods = [decoder.resources[r].instance for r in batch.resource_id]
    assert pods == ["frontend-7d9-abc", "frontend-7d9-abc", "checkout-5f4-xyz"]
    assert decoder.resources[int(batch.resource_id[2])].version == "2.0"
    assert batch.span_id.tolist() == [1, 2, 3] and batch.parent_span_id.tolist() == [0, 1, 2]
    assert len(set(batch.trace_key.tolist())) == 1 and batch.trace_key[0] != 0
    assert batch.http_status.tolist() == [200, 429, 503]
    assert batch.grpc_status.tolist() == [-1, -1, -1]
    assert batch.resend_count.tolist() == [0, 2, 0]
    assert batch.weight.tolist() == [1.0, 1.0, 1.0]
    assert (batch.start_ns + (batch.duration_ms * 1e6).astype(np.int64) == batch.end_ns).all()
    assert batch.error.tolist() == [False, False, True] and batch.client_error.tolist() == [False, True, False]


def test_rejected_spans_drop_out_of_every_column_alike():
    request = ExportTraceServiceRequest()
    scope = _resource(request, "api", "api-1")
    _span(scope, 1, 0, 2, 0, 10, {"http.route": "/a"})
    _span(scope, 2, 0, 2, 10, 5, {"http.route": "/b"})  # ends before it starts
    _span(scope, 3, 0, 3, 0, 10, {"peer.service": "db"})
    _, batch = _decode(request)
    assert batch.rejected == 1 and len(batch) == 2
    for name in ("kind", "service_id", "resource_id", "start_ns", "http_status", "grpc_status", "resend_count",
                 "weight", "trace_key", "span_id", "parent_span_id"):
        assert getattr(batch, name).shape == (2,), name
    assert batch.span_id.tolist() == [1, 3]


def test_malformed_ids_become_zero_not_errors():
    assert id64([b"\x01" + b"\0" * 7, b"", b"\x01\x02"]).tolist() == [1, 0, 0]
    keys = trace_keys([TRACE, b"short", b""])
    assert keys[0] != 0 and keys[1] == 0 and keys[2] == 0


def test_resources_are_interned_by_identity_and_capped():
    request = ExportTraceServiceRequest()
    for pod in ("p1", "p2", "p1"):
        _span(_resource(request, "svc", pod), 1, 0, 2, 0, 1, {"http.route": "/x"})
    decoder, batch = _decode(request)
    assert batch.resource_id[0] == batch.resource_id[2] != batch.resource_id[1]
    decoder.resources.max_resources = len(decoder.resources)
    request = ExportTraceServiceRequest()
    _span(_resource(request, "svc", "p3"), 1, 0, 2, 0, 1, {"http.route": "/x"})
    assert decoder.decode(request.SerializeToString(), None).resource_id.tolist() == [0]


def test_median_ns_is_numpys_median():
    from otel_ai.decode.columns import median_ns

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 511, 512):
        for values in (rng.integers(T0, T0 + 10**12, n), rng.integers(0, 2**63 - 1, n), np.full(n, 2**63 - 1)):
            assert median_ns(values.astype(np.int64)) == int(np.median(values.astype(np.int64)))
