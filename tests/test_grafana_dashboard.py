"""dashboards/otel-ai.json: every query names only series otel-ai exports, so the
dashboard cannot silently show "No data" after a rename."""
from __future__ import annotations

import json
import re
from pathlib import Path

from otel_ai.selfmetrics import SelfMetrics

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "otel-ai.json"
_SERIES = re.compile(r"\botel_ai_[a-z0-9_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> set[str]:
    """The series names /metrics exposes, by each metric family's type."""
    return {family.name + suffix for family in SelfMetrics().registry.collect()
            for suffix in _SUFFIXES.get(family.type, ("",))}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_query_names_only_exported_series() -> None:
    exported = exported_series()
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expr in queries:
        named = set(_SERIES.findall(expr))
        assert named, f"query names no otel-ai series: {expr}"
        assert named <= exported, f"{sorted(named - exported)} not exported by otel-ai (query: {expr})"


def test_the_kpis_are_on_the_dashboard() -> None:
    named = {name for expr in dashboard_queries() for name in _SERIES.findall(expr)}
    for kpi in ("otel_ai_incidents_opened_total", "otel_ai_detection_delay_seconds_bucket",
                "otel_ai_incident_time_to_acknowledge_seconds_bucket", "otel_ai_incident_time_to_resolve_seconds_bucket",
                "otel_ai_spans_received_total", "otel_ai_analysis_cost_today_usd"):
        assert kpi in named


def test_panels_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
