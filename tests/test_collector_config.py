"""collector-config.yaml: the example OpenTelemetry Collector config stays consistent
with itself (every pipeline wired to defined components), with otel-ai's defaults (ports)
and with the rules the docs promise (loop filter, processor order, two-tier routing by
service). The commented two-tier block is extracted and checked the same way.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from otel_ai.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "collector-config.yaml"
DOC_PATHS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BEGIN_MARKER = "# --- two-tier:begin"
END_MARKER = "# --- two-tier:end"
KINDS = ("receivers", "processors", "exporters")
SIGNALS = ("traces", "metrics", "logs")
LOOP_FILTER = "filter/otel-ai-loop"
LOADBALANCING_TYPES = ("loadbalancing", "load_balancing")  # load_balancing: newer name


def _text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


def _two_tier_text() -> str:
    lines = _text().splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    assert len(begins) == 1 and len(ends) == 1, "want exactly one two-tier begin and end marker"
    begin, end = begins[0], ends[0]
    assert begin < end
    out = []
    for line in lines[begin + 1:end]:
        # Every line of the block must stay commented out: the active config is single-node.
        assert line.startswith("#"), f"uncommented line inside the two-tier block: {line!r}"
        if line == "#":
            out.append("")
        else:
            assert line.startswith("# "), f"two-tier line not in '# ' form: {line!r}"
            out.append(line[2:])
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def active() -> dict:
    data = yaml.safe_load(_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def two_tier() -> dict:
    data = yaml.safe_load(_two_tier_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(params=["active", "two_tier"])
def any_config(request) -> dict:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def settings():
    return load_settings(env={})


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _port(endpoint: str) -> int:
    """Port of 'host:port' or 'scheme://host:port/path'."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parts.port is not None, f"no port in {endpoint!r}"
    return parts.port


def _host(endpoint: str) -> str:
    return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""


def _pipelines(config: dict) -> dict:
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipelines"
    return pipelines


def _otel_ai_exporters(config: dict) -> set[str]:
    """Exporters that feed otel-ai: a plain otlp exporter at host otel-ai, or loadbalancing."""
    found = set()
    for cid, body in (config.get("exporters") or {}).items():
        body = body or {}
        to_otel_ai = _type(cid) == "otlp" and _host(body.get("endpoint", "")) == "otel-ai"
        if to_otel_ai or _type(cid) in LOADBALANCING_TYPES:
            found.add(cid)
    return found


def _filter_conditions(config: dict, processor_id: str, signal: str = "traces") -> list[str]:
    body = (config.get("processors") or {}).get(processor_id) or {}
    level = {"traces": "span", "metrics": "metric"}[signal]
    return list(((body.get(signal) or {}).get(level)) or [])


def _loop_guards(config: dict) -> set[str]:
    """Filter processors with a condition on otel_ai.generated."""
    return {
        pid for pid in (config.get("processors") or {})
        if _type(pid) == "filter" and any("otel_ai.generated" in c for c in _filter_conditions(config, pid))
    }


def test_config_and_two_tier_block_parse(active, two_tier):
    for config in (active, two_tier):
        for key in (*KINDS, "service"):
            assert config.get(key), f"missing or empty top-level {key!r}"
    # The two-tier block is a variant of the active config, not a fragment of it.
    assert set(_pipelines(two_tier)) == set(_pipelines(active))


def test_pipelines_reference_only_defined_components(any_config):
    for name, pipeline in _pipelines(any_config).items():
        assert _type(name) in SIGNALS, f"pipeline {name!r}: unknown signal"
        assert pipeline.get("receivers"), f"pipeline {name!r} has no receivers"
        assert pipeline.get("exporters"), f"pipeline {name!r} has no exporters"
        for kind in KINDS:
            defined = set(any_config.get(kind) or {})
            for cid in pipeline.get(kind) or []:
                assert cid in defined, f"pipeline {name!r} uses undefined {kind[:-1]} {cid!r}"
    defined_ext = set(any_config.get("extensions") or {})
    for ext in any_config["service"].get("extensions") or []:
        assert ext in defined_ext, f"service uses undefined extension {ext!r}"


def test_every_defined_component_is_used(any_config):
    pipelines = _pipelines(any_config).values()
    for kind in KINDS:
        used = {cid for p in pipelines for cid in p.get(kind) or []}
        unused = set(any_config.get(kind) or {}) - used
        assert not unused, f"{kind} defined but in no pipeline: {sorted(unused)}"
    unused_ext = set(any_config.get("extensions") or {}) - set(any_config["service"].get("extensions") or [])
    assert not unused_ext, f"extensions defined but not enabled: {sorted(unused_ext)}"


def test_otel_ai_exporter_targets_otel_ai_grpc_port(active, settings):
    exporter = active["exporters"]["otlp/otel-ai"]
    # The otlp exporter speaks gRPC, so it must aim at otel-ai's gRPC port, not the HTTP one.
    assert _port(exporter["endpoint"]) == settings.receiver.grpc_port == 4317
    assert _host(exporter["endpoint"]) == "otel-ai"


def test_collector_receiver_listens_where_otel_ai_is_told_to_export(active, settings):
    protocols = active["receivers"]["otlp"]["protocols"]
    grpc_port = _port(protocols["grpc"]["endpoint"])
    http_port = _port(protocols["http"]["endpoint"])
    # Same ports as otel-ai's own receiver: an SDK switches between the two by host only.
    assert (grpc_port, http_port) == (settings.receiver.grpc_port, settings.receiver.http_port)

    # (variable, endpoint) pairs as the config's comments and the README tell users to set them.
    pattern = re.compile(r"(OTEL_EXPORTER_OTLP_(?:TRACES_|LOGS_)?ENDPOINT)=(\S+?)[`\s]")
    documented = pattern.findall(_text() + "\n")
    for path in DOC_PATHS:
        documented += pattern.findall(path.read_text(encoding="utf-8") + "\n")
    to_collector = [(var, e) for var, e in documented if _host(e) == "otel-collector"]
    assert to_collector, "collector-config.yaml should document otel-ai's OTEL_EXPORTER_OTLP_ENDPOINT"
    for var, endpoint in to_collector:
        assert _port(endpoint) in (grpc_port, http_port), f"{endpoint} is not a port the Collector listens on"
        if var == "OTEL_EXPORTER_OTLP_ENDPOINT":
            # The generic variable gets /v1/<signal> appended by the SDK: no path of its own.
            assert urlsplit(endpoint).path in ("", "/"), f"{var}={endpoint}: the SDK appends /v1/<signal>"


def test_prometheus_scrapes_otel_ai_admin_port(any_config, settings):
    jobs = any_config["receivers"]["prometheus"]["config"]["scrape_configs"]
    job = next(j for j in jobs if j["job_name"] == "otel-ai")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets
    for target in targets:
        assert _port(target) == settings.admin.port == 8888


def test_loop_filter_guards_otel_ai_only(any_config):
    guards = _loop_guards(any_config)
    assert LOOP_FILTER in guards
    conditions = _filter_conditions(any_config, LOOP_FILTER)
    assert conditions and all('resource.attributes["otel_ai.generated"]' in c for c in conditions)

    feeds_otel_ai = _otel_ai_exporters(any_config)
    assert feeds_otel_ai
    pipelines = _pipelines(any_config)
    otel_ai_pipes = [n for n, p in pipelines.items() if feeds_otel_ai & set(p["exporters"])]
    assert sorted(_type(n) for n in otel_ai_pipes) == ["metrics", "traces"], "otel-ai takes traces and metrics"
    for name in otel_ai_pipes:
        assert LOOP_FILTER in pipelines[name]["processors"], f"{name} feeds otel-ai without the loop filter"
        assert "prometheus" not in pipelines[name]["receivers"], f"{name} would send otel-ai its own KPIs"
        assert not any(_type(p) == "tail_sampling" for p in pipelines[name]["processors"]), \
            f"{name}: tail-sampled traces over-count errors"
    metric_conditions = _filter_conditions(any_config, LOOP_FILTER, "metrics")
    assert metric_conditions and all('resource.attributes["otel_ai.generated"]' in c for c in metric_conditions)

    # Incident traces must reach the tracing backend: its pipelines take the otlp receiver
    # (where otel-ai exports to) and never run the loop filter.
    backend_pipes = [n for n, p in pipelines.items() if "otlp/tracing" in p["exporters"]]
    assert backend_pipes
    for name in backend_pipes:
        p = pipelines[name]
        assert _type(name) == "traces" and "otlp" in p["receivers"]
        assert not guards & set(p.get("processors") or []), f"{name} would drop incident traces"
        assert not feeds_otel_ai & set(p["exporters"]), f"{name} mixes the backend and otel-ai"


def test_otel_ai_log_events_and_metrics_have_a_pipeline(any_config):
    pipelines = _pipelines(any_config)
    assert any(_type(n) == "logs" and "otlp" in p["receivers"] for n, p in pipelines.items())
    assert any(_type(n) == "metrics" and "prometheus" in p["receivers"] for n, p in pipelines.items())


def test_memory_limiter_first_and_batch_last(any_config):
    for name, pipeline in _pipelines(any_config).items():
        types = [_type(pid) for pid in pipeline.get("processors") or []]
        assert types and types[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert types[-1] == "batch" and types.count("batch") == 1, f"{name}: batch must come last"


def test_otel_ai_exporter_resilience(active):
    exporter = active["exporters"]["otlp/otel-ai"]
    assert exporter["compression"] == "gzip"
    assert exporter["retry_on_failure"]["enabled"] is True
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["tls"]["insecure"] is True  # otel-ai's default receiver is plaintext


def test_two_tier_routes_by_service_to_replicas(two_tier, settings):
    lbs = [cid for cid in two_tier["exporters"] if _type(cid) in LOADBALANCING_TYPES]
    assert len(lbs) == 1
    lb = two_tier["exporters"][lbs[0]]
    assert lb["routing_key"] == "service"  # the default, traceID, would split services over replicas
    otlp = lb["protocol"]["otlp"]
    assert "endpoint" not in otlp  # set per replica by the resolver
    assert otlp["tls"]["insecure"] is True and otlp.get("timeout")
    hostnames = lb["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2 and len(set(hostnames)) == len(hostnames)
    for hostname in hostnames:
        assert _port(hostname) == settings.receiver.grpc_port
    # Re-routing after a replica fails needs the queue and retries at the loadbalancer level.
    assert lb["retry_on_failure"]["enabled"] is True and lb["sending_queue"]["enabled"] is True

    users = [n for n, p in _pipelines(two_tier).items() if lbs[0] in p["exporters"]]
    assert sorted(_type(n) for n in users) == ["metrics", "traces"]  # a service's metrics meet its spans
    # Tier 1 sends to otel-ai through the loadbalancer only.
    single = [cid for cid in _otel_ai_exporters(two_tier) if _type(cid) == "otlp"]
    assert not single
    block = _two_tier_text()
    assert "k8s:" in block and "dns:" in block, "keep the commented k8s/dns resolver alternatives"


def test_sizing_rule_documented():
    text = _text()
    assert "otel-ai bench" in text
    assert re.search(r"one replica per ~[\d,]+ spans/s", text)


def _collector_binary() -> str | None:
    return shutil.which("otelcol-contrib") or shutil.which("otelcol")


def _validate(binary: str, path: Path, needed: set[str]) -> None:
    listing = subprocess.run([binary, "components"], capture_output=True, text=True, timeout=60, check=False)
    if listing.returncode == 0:
        missing = sorted(
            t for t in needed
            if not any(re.search(rf"\b{re.escape(n)}\b", listing.stdout)
                       for n in (LOADBALANCING_TYPES if t in LOADBALANCING_TYPES else (t,)))
        )
        if missing:
            pytest.skip(f"{binary} lacks components {missing} (use otelcol-contrib)")
    result = subprocess.run([binary, "validate", "--config", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"{binary} validate {path.name} failed:\n{result.stdout}\n{result.stderr}"


def _component_types(config: dict) -> set[str]:
    return {_type(cid) for kind in (*KINDS, "extensions") for cid in config.get(kind) or {}}


def test_otelcol_validates_active_config(active):
    binary = _collector_binary()
    if binary is None:
        pytest.skip("neither otelcol-contrib nor otelcol is on PATH")
    _validate(binary, CONFIG_PATH, _component_types(active))


def test_otelcol_validates_two_tier_block(two_tier, tmp_path):
    binary = _collector_binary()
    if binary is None:
        pytest.skip("neither otelcol-contrib nor otelcol is on PATH")
    path = tmp_path / "two-tier.yaml"
    path.write_text(_two_tier_text(), encoding="utf-8")
    _validate(binary, path, _component_types(two_tier))
