"""OTLP metrics in: request-duration histograms become RED points per route and
dependency (decode -> temporality), resource utilization becomes saturation series.
See docs/metrics.md."""
