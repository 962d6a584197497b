"""LATENCY_ANOMALY: a route's p95 latency (from log-scale histograms) rises above
the configured threshold, or above an adaptive one (3x the baseline p95, at least
+100 ms) when the route is normally fast: p95 40 ms -> 600 ms pages even though
600 ms < 1000 ms. Traffic surges that add a few ms do not."""
from __future__ import annotations

from otel_ai.detectors.base import ROUTE_KIND, LatencyDetector


class LatencyAnomaly(LatencyDetector):
    event_type = "LATENCY_ANOMALY"
    subject_kind = ROUTE_KIND
