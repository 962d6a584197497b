"""otel-ai's own KPIs as OpenTelemetry metrics over OTLP, next to Prometheus /metrics.

The Prometheus registry (otel_ai/selfmetrics.py) stays the one place that counts. This
bridge reads it on each OTLP export with observable instruments: counters as monotonic
sums, gauges as gauges, and each histogram as its count and sum (so MTTR, time to
acknowledge, detection delay and mean confidence are sum / count on any backend).
Exported with the SDK's OTLP metric exporter, configured by the standard variables.
Label values pass through the same redactor as everything else that leaves the process
(a few carry text from outside, such as the error a notifier's API answered).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from otel_ai.analysis.redact import redactor_from_settings
from otel_ai.config import Redaction
from otel_ai.decode import GENERATED_ATTRIBUTE
from otel_ai.otlp_env import otlp_protocol
from otel_ai.selfmetrics import SelfMetrics

CACHE_S = 1.0  # one registry read serves every instrument of an export cycle


def default_metric_exporter() -> MetricExporter:
    if otlp_protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()


class OtelMetricsBridge:
    def __init__(self, metrics: SelfMetrics, exporter: MetricExporter, interval_s: float = 60.0,
                 redaction: Redaction | None = None) -> None:
        self.metrics = metrics
        self.redactor = redactor_from_settings(redaction or Redaction())
        self._lock = threading.Lock()
        self._samples: dict[str, list[tuple[dict, float]]] = {}
        self._read_at = 0.0
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=int(interval_s * 1000))
        resource = Resource.create({"service.name": "otel-ai", GENERATED_ATTRIBUTE: True})
        self.provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        meter = self.provider.get_meter("otel_ai.selfmetrics")
        for family in metrics.registry.collect():
            if family.type == "counter":
                meter.create_observable_counter(family.name, [self._callback(family.name + "_total")],
                                                description=family.documentation)
            elif family.type == "gauge":
                meter.create_observable_gauge(family.name, [self._callback(family.name)],
                                              description=family.documentation)
            elif family.type == "histogram":
                for part in ("count", "sum"):
                    meter.create_observable_counter(f"{family.name}.{part}", [self._callback(f"{family.name}_{part}")],
                                                    description=f"{family.documentation} ({part})")

    def _read(self) -> dict[str, list[tuple[dict, float]]]:
        with self._lock:
            if time.monotonic() - self._read_at > CACHE_S:
                samples: dict[str, list[tuple[dict, float]]] = {}
                for family in self.metrics.registry.collect():
                    for sample in family.samples:
                        labels = {k: self.redactor.text(v) for k, v in sample.labels.items()}
                        samples.setdefault(sample.name, []).append((labels, sample.value))
                self._samples, self._read_at = samples, time.monotonic()
            return self._samples

    def _callback(self, sample_name: str):
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, labels) for labels, value in self._read().get(sample_name, [])]
        return observe

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()
