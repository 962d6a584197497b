"""Building OTLP ExportMetricsServiceRequests by hand, for tests and the metrics bench."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

CUMULATIVE = 2
DELTA = 1
DEFAULT_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def set_attributes(target, attributes: Mapping[str, object]) -> None:
    """Append OTLP KeyValues of str, int, float or bool values to a repeated field."""
    for key, value in attributes.items():
        item: KeyValue = target.add(key=key)
        if isinstance(value, bool):
            item.value.bool_value = value
        elif isinstance(value, int):
            item.value.int_value = value
        elif isinstance(value, float):
            item.value.double_value = value
        else:
            item.value.string_value = str(value)


def metric(request: ExportMetricsServiceRequest, name: str, unit: str = "s",
           resource: Mapping[str, object] | None = None):
    """A new Metric in a new ResourceMetrics of `request`."""
    resource_metrics = request.resource_metrics.add()
    set_attributes(resource_metrics.resource.attributes, resource or {"service.name": "checkout"})
    return resource_metrics.scope_metrics.add().metrics.add(name=name, unit=unit)


def histogram_point(data, attributes: Mapping[str, object], counts: Sequence[int], start_ns: int, end_ns: int,
                    bounds: Sequence[float] = DEFAULT_BOUNDS_S, minimum: float | None = None,
                    maximum: float | None = None):
    """An explicit-bucket point (counts has len(bounds) + 1 entries) added to `data`, a
    Histogram whose aggregation_temporality the caller sets."""
    point = data.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=end_ns, count=sum(counts),
                                 bucket_counts=list(counts), explicit_bounds=list(bounds))
    return _finish(point, attributes, minimum, maximum)


def exponential_point(data, attributes: Mapping[str, object], positive: Sequence[int], start_ns: int, end_ns: int,
                      scale: int = 3, offset: int = -60, zero_count: int = 0, minimum: float | None = None,
                      maximum: float | None = None):
    """An exponential-histogram point added to `data`, an ExponentialHistogram."""
    point = data.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=end_ns,
                                 count=zero_count + sum(positive), scale=scale, zero_count=zero_count)
    point.positive.offset = offset
    point.positive.bucket_counts.extend(positive)
    return _finish(point, attributes, minimum, maximum)


def _finish(point, attributes: Mapping[str, object], minimum: float | None, maximum: float | None):
    if minimum is not None:
        point.min = minimum
    if maximum is not None:
        point.max = maximum
    set_attributes(point.attributes, attributes)
    return point


def gauge_point(data, value: float, time_ns: int, attributes: Mapping[str, object] | None = None):
    point = data.data_points.add(time_unix_nano=time_ns, as_double=value)
    set_attributes(point.attributes, attributes or {})
    return point
