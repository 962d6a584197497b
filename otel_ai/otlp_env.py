"""The standard OTEL_EXPORTER_OTLP_* variables, read once for every signal otel-ai exports."""
from __future__ import annotations

import os
from collections.abc import Mapping


def otlp_export_configured(env: Mapping[str, str] | None = None) -> bool:
    """Export is on when an OTLP endpoint is set; the exporters' localhost default would be
    otel-ai's own port."""
    env = os.environ if env is None else env
    return any(env.get(f"OTEL_EXPORTER_OTLP{signal}_ENDPOINT") for signal in ("", "_TRACES", "_LOGS", "_METRICS"))


def otlp_protocol(signal: str, env: Mapping[str, str] | None = None) -> str:
    """"grpc" or "http/protobuf" for signal ("traces", "logs", "metrics"): the per-signal
    variable, else the generic one, else the spec's default."""
    env = os.environ if env is None else env
    return (env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf")
