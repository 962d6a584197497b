"""OTLP/JSON for traces and metrics: the encoding of OTLP/HTTP with application/json
and of the Collector's file exporter.

OTLP/JSON is the protobuf JSON mapping with one deviation that matters: trace and
span ids (of spans, span links and metric exemplars) are lowercase hex strings, where
the protobuf mapping would use base64.
Everything else (lowerCamelCase or original field names, int64 as string or number,
enums as int or name, unknown fields ignored) is what json_format already accepts,
so ids are rewritten to base64 and the rest is left to ParseDict.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Callable

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Both spellings, because ParseDict accepts both and so must the id rewriting.
_RESOURCE_SPANS = ("resourceSpans", "resource_spans")
_SCOPE_SPANS = ("scopeSpans", "scope_spans")
_SPAN_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_LINK_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id")
_RESOURCE_METRICS = ("resourceMetrics", "resource_metrics")
_SCOPE_METRICS = ("scopeMetrics", "scope_metrics")
_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram")
_DATA_POINTS = ("dataPoints", "data_points")
_HEX = re.compile(r"[0-9a-fA-F]*")

Request = TypeVar("Request", ExportTraceServiceRequest, ExportMetricsServiceRequest)


def parse_otlp_json(data: bytes, into: type[Request] = ExportTraceServiceRequest) -> Request:
    """Decode one OTLP/JSON export request (traces unless `into` says otherwise);
    ValueError says what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"OTLP/JSON body is not valid UTF-8: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError(f"OTLP/JSON request must be a JSON object, got {type(document).__name__}")

    _rewrite_ids(document, _hex_to_base64)
    request = into()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"invalid OTLP/JSON: {exc}") from None
    except RecursionError:
        raise ValueError("invalid OTLP/JSON: nested too deeply") from None
    except (TypeError, AttributeError, KeyError, OverflowError) as exc:
        # json_format occasionally lets a type mismatch through as a plain Python error.
        raise ValueError(f"invalid OTLP/JSON: {exc!r}") from None
    return request


def to_otlp_json(message: Message) -> str:
    """One compact OTLP/JSON document (no newline), as the Collector's file exporter
    writes one per line. Works for trace and metrics requests and for responses."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _rewrite_ids(document, _base64_to_hex)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _rewrite_ids(document: dict[str, Any], convert: Callable[[str, str], str]) -> None:
    """Convert the id fields in place; shapes that are wrong are left for ParseDict to
    reject with its own message."""
    for resource_spans in _items(document, _RESOURCE_SPANS):
        for scope_spans in _items(resource_spans, _SCOPE_SPANS):
            for span in _items(scope_spans, ("spans",)):
                _convert_fields(span, _SPAN_ID_FIELDS, convert)
                for link in _items(span, ("links",)):
                    _convert_fields(link, _LINK_ID_FIELDS, convert)
    for resource_metrics in _items(document, _RESOURCE_METRICS):
        for scope_metrics in _items(resource_metrics, _SCOPE_METRICS):
            for metric in _items(scope_metrics, ("metrics",)):
                for data in _values(metric, _METRIC_DATA):
                    for point in _items(data, _DATA_POINTS):
                        for exemplar in _items(point, ("exemplars",)):
                            _convert_fields(exemplar, _LINK_ID_FIELDS, convert)


def _items(parent: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(parent, dict):
        return []
    found: list[dict[str, Any]] = []
    for key in keys:
        value = parent.get(key)
        if isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict))
    return found


def _values(parent: dict[str, Any], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    return [parent[key] for key in keys if isinstance(parent.get(key), dict)]


def _convert_fields(obj: dict[str, Any], keys: tuple[str, ...], convert: Callable[[str, str], str]) -> None:
    for key in keys:
        if key in obj and obj[key] is not None:
            obj[key] = convert(key, obj[key])


def _hex_to_base64(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a hex string, got {type(value).__name__}")
    # fromhex alone would also accept embedded whitespace.
    if len(value) % 2 or not _HEX.fullmatch(value):
        raise ValueError(f"{field} is not an even-length hex string: {value[:64]!r}")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _base64_to_hex(field: str, value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except binascii.Error as exc:  # MessageToDict always writes valid base64
        raise AssertionError(f"{field}: unexpected base64 from json_format: {exc}") from None
