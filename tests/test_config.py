from __future__ import annotations

import pytest
import yaml

from otel_ai.cli import main
from otel_ai.config import ConfigError, load_settings


def test_embedded_defaults_are_the_seeds():
    s = load_settings(env={})
    e = s.events["ERROR_RATE_SPIKE"]
    assert (e.threshold, e.window, e.min_samples, e.severity) == (10, 300, 5, "critical")
    lat = s.events["LATENCY_ANOMALY"]
    assert (lat.threshold, lat.window, lat.min_samples, lat.severity) == (1000, 300, 5, "warning")
    cb = s.events["CIRCUIT_BREAKER_CANDIDATE"]
    assert (cb.threshold, cb.window, cb.min_samples, cb.severity) == (50, 120, 3, "critical")
    assert s.min_confidence == 0.75 and s.budget.max_cost_per_day == 5.0 and s.budget.max_analyses_per_hour == 20


def test_yaml_events_block_and_environment_override(tmp_path):
    path = tmp_path / "ai.yaml"
    path.write_text(yaml.safe_dump({"events": {"ERROR_RATE_SPIKE": {"threshold": 5, "window": "2m",
                                                                     "severity": "WARNING"}}}))
    s = load_settings(path, env={"AI_MIN_CONFIDENCE": "0.8", "AI_EVENTS_ENABLED": "false"})
    assert s.events["ERROR_RATE_SPIKE"].threshold == 5
    assert s.events["ERROR_RATE_SPIKE"].window == 120
    assert s.events["ERROR_RATE_SPIKE"].severity == "warning"
    assert s.events["ERROR_RATE_SPIKE"].min_samples == 5  # merged from the defaults
    assert s.min_confidence == 0.8 and s.enabled is False


@pytest.mark.parametrize("body, key", [
    ({"events": {"ERROR_RATE_SPIKE": {"window": "5x"}}}, "events.ERROR_RATE_SPIKE.window"),
    ({"events": {"LATENCY_ANOMALY": {"minSamples": 0}}}, "events.LATENCY_ANOMALY.minSamples"),
    ({"events": {"ERROR_RATE_SPIKE": {"severity": "loud"}}}, "events.ERROR_RATE_SPIKE.severity"),
    ({"receiver": {"grpcPort": 70000}}, "receiver.grpcPort"),
    ({"budget": {"maxCostPerDay": -1}}, "budget.maxCostPerDay"),
    ({"windows": {"typo": 1}}, "windows.typo"),
])
def test_bad_config_names_the_key(tmp_path, body, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert key in str(err.value)


def test_bad_environment_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"AI_MIN_CONFIDENCE": "high"})
    assert "minConfidence" in str(err.value) and "AI_MIN_CONFIDENCE" in str(err.value)


def test_cli_fails_at_start_up_on_bad_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("events: [")
    assert main(["serve", "--config", str(path), "--data-dir", str(tmp_path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
