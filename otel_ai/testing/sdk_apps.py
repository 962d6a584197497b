"""Real OpenTelemetry SDK apps against a real, serving otel-ai, for the metrics and
sampling tests: the app on loopback ports, metric apps (MeterProvider + the OTLP/gRPC
metric exporter, exporting on force_flush), trace apps with a probability sampler that
writes `th` into tracestate, and a tail sampler standing in for the Collector's."""
from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import StatusCode, TraceState

from otel_ai.app import App, Credentials
from otel_ai.config import load_settings
from otel_ai.model import Incident
from otel_ai.timefmt import NS_PER_S

SERVER_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_RANDOMNESS = (1 << 56) - 1  # W3C: the trace id's rightmost 56 bits


@contextmanager
def serving_app(data_dir: Path, incidents_jsonl: Path | None = None) -> Iterator[App]:
    """otel-ai as `serve` runs it, on free loopback ports, without keys or console output."""
    settings = load_settings(env={})
    settings.receiver.host = settings.admin.host = "127.0.0.1"
    settings.receiver.grpc_port = settings.receiver.http_port = settings.admin.port = 0
    app = App(settings, data_dir, incidents_jsonl=incidents_jsonl, console=False, credentials=Credentials())
    app.start()
    try:
        yield app
    finally:
        app.stop(grace_s=0)


def incidents_of(app: App) -> list[Incident]:
    """Every incident of the app once all it was sent went through, oldest first."""
    assert app.pipeline.wait_idle(30)
    assert app.pipeline.persisted(10)
    return sorted(app.store.list(), key=lambda i: i.opened_at_ns)


def timeline_start(seconds: int, slot_s: int = 10) -> int:
    """When `seconds` of simulated traffic must start to end half a minute before now, on
    a slot boundary (the apps send the recent past in a few seconds)."""
    return (time.time_ns() // (slot_s * NS_PER_S) - seconds // slot_s - 3) * slot_s * NS_PER_S


@contextmanager
def metrics_app(port: int, resource: dict) -> Iterator[MeterProvider]:
    """An instrumented process: its MeterProvider and OTLP/gRPC metric exporter (cumulative,
    the default). It exports on force_flush only: each flush is one export interval."""
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create(resource), metric_readers=[reader], shutdown_on_exit=False)
    try:
        yield provider
    finally:
        provider.shutdown()


def request_histogram(provider: MeterProvider, name: str = "http.server.request.duration"):
    return provider.get_meter("app").create_histogram(name, unit="s",
                                                      explicit_bucket_boundaries_advisory=SERVER_BOUNDS_S)


class SeededIds(RandomIdGenerator):
    """Random trace and span ids from a seed: which traces a sampler keeps is then the
    same on every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


@contextmanager
def traces_app(port: int, resource: dict, sampler: Sampler | None = None, exporter: SpanExporter | None = None,
               seed: int | None = None) -> Iterator[tuple[TracerProvider, BatchSpanProcessor]]:
    """An instrumented process sending traces over OTLP/gRPC, exporting on force_flush;
    with a seed, its trace ids are the same on every run."""
    exporter = exporter or OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    processor = BatchSpanProcessor(exporter, max_queue_size=200_000, schedule_delay_millis=3_600_000,
                                   max_export_batch_size=20_000)
    kwargs = {} if sampler is None else {"sampler": sampler}
    if seed is not None:
        kwargs["id_generator"] = SeededIds(seed)
    provider = TracerProvider(resource=Resource.create(resource), shutdown_on_exit=False, **kwargs)
    provider.add_span_processor(processor)
    try:
        yield provider, processor
    finally:
        provider.shutdown()


class ThresholdSampler(Sampler):
    """OpenTelemetry probability sampling (consistent by trace id): keeps a trace when its
    56-bit randomness is at least the threshold and writes the threshold into the span's
    tracestate as `ot=th:...`, as samplers that implement the spec do."""

    def __init__(self, th: str) -> None:
        self.th = th
        self.threshold = int(th.ljust(14, "0"), 16)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if trace_id & _RANDOMNESS < self.threshold:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, TraceState([("ot", f"th:{self.th}")]))

    def get_description(self) -> str:
        return f"ThresholdSampler{{th:{self.th}}}"


class TailSampler(SpanExporter):
    """What a tail-sampling Collector does in front of a backend: every trace with a failing
    span is kept, and `keep_ok` of the others (by trace id, so whole traces agree); no
    weight is recorded. Spans of one trace must arrive in one export."""

    def __init__(self, downstream: SpanExporter, keep_ok: float) -> None:
        self.downstream = downstream
        self.keep_below = int(keep_ok * (_RANDOMNESS + 1))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        failing = {s.context.trace_id for s in spans if s.status.status_code == StatusCode.ERROR}
        kept = [s for s in spans if s.context.trace_id in failing or s.context.trace_id & _RANDOMNESS < self.keep_below]
        return self.downstream.export(kept) if kept else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.downstream.force_flush(timeout_millis)
