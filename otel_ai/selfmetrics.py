"""otel-ai's own counters, exposed on the admin port's /metrics.

One registry per running instance, so that several instances (tests, replicas in one
process) never share counters.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "otel_ai_export_requests", "OTLP export requests by transport and outcome",
            ["transport", "outcome"], registry=r)
        self.spans_received = Counter(
            "otel_ai_spans_received", "Spans accepted into the pipeline", ["transport"], registry=r)
        self.spans_rejected = Counter(
            "otel_ai_spans_rejected", "Spans refused (partial_success or whole request)", ["reason"], registry=r)
        self.spans_dropped = Counter(
            "otel_ai_spans_dropped", "Accepted spans not counted in windows", ["reason"], registry=r)
        self.metric_requests = Counter(
            "otel_ai_metric_export_requests", "OTLP metrics export requests by transport and outcome",
            ["transport", "outcome"], registry=r)
        self.data_points_received = Counter(
            "otel_ai_data_points_received", "Metric data points accepted", ["transport"], registry=r)
        self.data_points_rejected = Counter(
            "otel_ai_data_points_rejected", "Metric data points refused (partial_success or whole request)",
            ["reason"], registry=r)
        self.data_points_dropped = Counter(
            "otel_ai_data_points_dropped", "Accepted RED data points (slot shares) not counted in windows",
            ["reason"], registry=r)
        self.metric_subjects = Gauge(
            "otel_ai_metric_subjects", "Routes and dependencies whose counts come from metrics (spans give suspects)",
            registry=r)
        self.tail_sampling_suspected = Gauge(
            "otel_ai_tail_sampling_suspected", "Routes and dependencies whose traces look tail-sampled (see check)",
            registry=r)
        self.metric_streams = Gauge(
            "otel_ai_metric_streams", "Cumulative metric streams with delta state", registry=r)
        self.graph_traces_kept = Gauge(
            "otel_ai_graph_traces_kept_ratio", "Share of traces the service graph's join keeps (1: all; lower "
            "past its cap, each kept trace weighing for the others)", registry=r)
        self.graph_traces_kept.set(1.0)
        self.queue_depth = Gauge(
            "otel_ai_queue_batches", "Decoded batches waiting for the window stage", registry=r)
        self.subjects = Gauge(
            "otel_ai_subjects_tracked", "Routes and dependencies with window state", ["kind"], registry=r)
        self.incidents = Counter(
            "otel_ai_incidents_opened", "Incidents opened", ["type", "severity"], registry=r)
        self.incident_changes = Counter(
            "otel_ai_incident_changes", "Incident lifecycle changes", ["change"], registry=r)
        self.open_incidents = Gauge(
            "otel_ai_incidents_open", "Incidents not yet resolved", registry=r)
        self.detection_delay = Histogram(
            "otel_ai_detection_delay_seconds", "Event time from first breaching slot to incident open",
            buckets=(5, 10, 15, 20, 30, 45, 60, 120, 300), registry=r)
        self.analyses = Counter(
            "otel_ai_analyses", "Incident analyses by source (claude, offline) and outcome", ["source", "outcome"],
            registry=r)
        self.analysis_calls = Counter(
            "otel_ai_analysis_calls", "Claude API calls by result (ok, retry, error)", ["result"], registry=r)
        self.analysis_cost = Counter(
            "otel_ai_analysis_cost_usd", "USD spent on Claude calls", registry=r)
        self.analysis_tokens = Counter(
            "otel_ai_analysis_tokens", "Tokens billed, by kind", ["kind"], registry=r)
        self.analysis_queue = Gauge(
            "otel_ai_analysis_queue", "Incidents waiting for analysis", registry=r)
        self.analysis_latency = Histogram(
            "otel_ai_analysis_seconds", "Wall time from queueing to a finished analysis",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 90, 120), registry=r)
        self.notifications = Counter(
            "otel_ai_notifications", "Notification policy decisions per notifier (queued, grouped, inhibited, "
            "silenced, gated, not_routed)", ["notifier", "outcome"], registry=r)
        self.notifier_calls = Counter(
            "otel_ai_notifier_calls", "Calls to notifiers' APIs by notifier and result", ["notifier", "result"],
            registry=r)
        self.outbox_pending = Gauge(
            "otel_ai_outbox_pending", "Notifications waiting for delivery", ["notifier"], registry=r)
        self.sink_queue = Gauge(
            "otel_ai_sink_queue", "Incident changes waiting for a sink or stage", ["sink"], registry=r)
        self.sink_dropped = Counter(
            "otel_ai_sink_dropped", "Incident changes dropped because a sink or stage fell behind", ["sink"],
            registry=r)
        self.time_to_resolve = Histogram(
            "otel_ai_incident_time_to_resolve_seconds", "MTTR: event time from open to resolved",
            ["type"], buckets=(60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400), registry=r)
        self.time_to_acknowledge = Histogram(
            "otel_ai_incident_time_to_acknowledge_seconds", "From open to the first acknowledge",
            ["type"], buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400), registry=r)
        self.incident_confidence = Histogram(
            "otel_ai_incident_confidence", "Detection confidence of opened incidents (mean = sum / count)",
            buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0), registry=r)
        self.analysis_cost_today = Gauge(
            "otel_ai_analysis_cost_today_usd", "USD spent on Claude today (UTC)", registry=r)
        self.watermark = Gauge(
            "otel_ai_watermark_seconds", "Event-time watermark (unix seconds)", registry=r)
