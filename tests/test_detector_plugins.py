"""Detectors as a plugin interface: config refuses a type without a detector, loads user
detectors from a module path, and check shows only what really runs."""
from __future__ import annotations

import random
import textwrap

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.check import _detector_checks
from otel_ai.cli import main
from otel_ai.config import ConfigError, load_settings
from otel_ai.pipeline import Pipeline
from otel_ai.store import IncidentStore
from otel_ai.testing.harness import RecordingExporter

T0 = 1_771_164_000 * 1_000_000_000

# A detector in one file, as docs/development.md walks through it.
PLUGIN = '''
from otel_ai.counters import Counter
from otel_ai.detectors.base import ROUTE_KIND, RateDetector, where

TEAPOTS = Counter("teapots", select=lambda batch: batch.http_status == 418)


class TeapotSurge(RateDetector):
    """TEAPOT_SURGE: a route answers 418 to a share of its requests."""

    event_type = "TEAPOT_SURGE"
    subject_kind = ROUTE_KIND
    bad = TEAPOTS  # counted per slot, and captured for suspects
    bad_noun = "requests answered 418"
    adaptive = False
    metric = "teapot_rate"
    suspect_keys = ("tenant.id",)

    @staticmethod
    def summary(anomaly):
        return f"Teapot surge: {anomaly.value:.0f}% of {where(anomaly.subject)} answered 418"
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "teapot_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "otel-ai.yaml"
    path.write_text(yaml.safe_dump({
        "detectors": ["teapot_plugin:TeapotSurge"],
        "events": {"TEAPOT_SURGE": {"threshold": 20, "window": "1m", "minSamples": 10, "severity": "warning"},
                   "RETRY_STORM": {"enabled": False}},
    }))
    return path


def config(tmp_path, data: dict):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_event_type_without_a_detector_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, {"events": {"RETRY_STROM": {"threshold": 2, "window": "1m", "minSamples": 5,
                                                                    "severity": "warning"}}}), env={})
    assert "no detector for event type(s) ['RETRY_STROM']" in str(err.value)
    assert "RETRY_STORM" in str(err.value)  # the types that do have one are listed


def test_budget_and_recovery_types_are_explained_not_configured(tmp_path):
    rule = {"threshold": 1, "window": "1m", "minSamples": 1, "severity": "info"}
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, {"events": {"COST_ALERT": rule, "RECOVERY_SIGNAL": rule}}), env={})
    assert "COST_ALERT is raised by the AI budget (budget.alertOnBudgetExceeded)" in str(err.value)
    assert "RECOVERY_SIGNAL is the 'recovering' change of an open incident" in str(err.value)


def test_a_detector_owns_its_config_fields(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, {"events": {"RETRY_STORM": {"criticalAt": 0.5},
                                                   "ERROR_RATE_SPIKE": {"criticalAt": 3}}}), env={})
    text = str(err.value)
    assert "events.RETRY_STORM.criticalAt" in text  # its own field, validated
    assert "events.ERROR_RATE_SPIKE.criticalAt: Extra inputs are not permitted" in text  # not another's


def test_otel_ai_check_fails_and_names_the_unknown_type(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir("/")
    path = config(tmp_path, {"events": {"DISK_FULL": {"threshold": 90, "window": "5m", "minSamples": 1,
                                                       "severity": "critical"}}})
    code = main(["check", "--config", str(path), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 1 and "❌" in out and "DISK_FULL" in out


@pytest.mark.parametrize("spec, message", [
    ("teapot_plugin.TeapotSurge", "expected 'package.module:ClassName'"),
    ("no_such_module_xyz:Thing", "cannot import no_such_module_xyz: ModuleNotFoundError"),
    ("teapot_plugin:Missing", "teapot_plugin has no class Missing"),
    ("teapot_plugin:Counter", "is not a detector: it lacks event_type"),
])
def test_a_bad_plugin_is_a_clear_config_error(plugin, tmp_path, spec, message):
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, {"detectors": [spec]}), env={})
    assert "detectors" in str(err.value) and message in str(err.value)


def test_a_plugin_without_a_rule_is_refused(plugin, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, {"detectors": ["teapot_plugin:TeapotSurge"]}), env={})
    assert "detects TEAPOT_SURGE, which has no rule under events" in str(err.value)


def test_check_lists_what_really_runs(plugin):
    lines = [text for _, text in _detector_checks(load_settings(plugin, env={}))]
    assert any(line.startswith("TEAPOT_SURGE [teapot_plugin:TeapotSurge]: share of requests answered 418 on routes")
               for line in lines)
    assert "RETRY_STORM: disabled" in lines
    assert not any(line.startswith("RETRY_STORM:") and "calls per request" in line for line in lines)


def kitchen_traffic(second: int, rnd: random.Random, teapot_share: float) -> bytes:
    """One second of SERVER spans of kitchen POST /brew, some answered 418 for tenant 'earl-grey'."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "kitchen"
    scope = resource_spans.scope_spans.add()
    for i in range(20):
        teapot = rnd.random() < teapot_share
        start = T0 + second * 1_000_000_000 + i * 40_000_000
        span = scope.spans.add(trace_id=rnd.randbytes(16), span_id=rnd.randbytes(8), kind=2, name="POST /brew",
                               start_time_unix_nano=start, end_time_unix_nano=start + 15_000_000)
        for key, value in (("http.request.method", "POST"), ("http.route", "/brew"),
                           ("tenant.id", "earl-grey" if teapot else rnd.choice(["assam", "darjeeling", "sencha"]))):
            span.attributes.add(key=key).value.string_value = value
        span.attributes.add(key="http.response.status_code").value.int_value = 418 if teapot else 200
    return request.SerializeToString()


def test_a_user_detector_from_a_module_path_fires_with_suspects(plugin, tmp_path):
    settings = load_settings(plugin, env={})
    recorder = RecordingExporter()
    store = IncidentStore(tmp_path / "incidents.db")
    pipeline = Pipeline(settings, store, [recorder], use_wall_clock=False)
    assert "teapots" in pipeline.windows.values and "retries" not in pipeline.windows.values  # only what runs
    assert [c.name for c in pipeline.decoder.capture_marks] == ["throttled", "auth_failures", "teapots"]
    rnd = random.Random(5)
    for second in range(240):
        pipeline.feed(kitchen_traffic(second, rnd, 0.0 if second < 180 else 0.6))
    pipeline.flush()
    store.close()
    [teapot] = [i for i in recorder.opened() if i.type == "TEAPOT_SURGE"]
    assert teapot.subject.route == "/brew" and teapot.summary.startswith("Teapot surge: ")
    assert (teapot.opened_at_ns - T0) / 1e9 <= 180 + 60
    assert teapot.data["metric"] == "teapot_rate" and teapot.data["current_value"] >= 20
    assert (teapot.suspects[0]["key"], teapot.suspects[0]["value"]) == ("tenant.id", "earl-grey")
