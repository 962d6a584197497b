from __future__ import annotations

import io
import json
import threading

from otel_ai.exporters.base import IncidentExporter
from otel_ai.exporters.console import ConsoleExporter, format_incident_line
from otel_ai.exporters.jsonl import JsonlExporter

from otel_ai.model import DEPENDENCY
from otel_ai.testing.factory import IncidentFactory

T0 = 1_771_165_740_000_000_000  # 2026-02-15T14:29:00Z

DESIGN_FIELDS = {
    "id", "type", "severity", "status", "service", "method", "route", "summary", "confidence",
    "opened_at", "updated_at", "resolved_at", "acknowledged_by", "data", "context", "suspects",
    "analysis",
}


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_exporters_satisfy_the_protocol(tmp_path):
    assert isinstance(JsonlExporter(tmp_path / "x.jsonl"), IncidentExporter)
    assert isinstance(ConsoleExporter(io.StringIO()), IncidentExporter)
    assert not isinstance(object(), IncidentExporter)


def test_jsonl_appends_one_parseable_snapshot_per_change(tmp_path):
    path = tmp_path / "out" / "incidents.jsonl"
    exporter = JsonlExporter(path)
    assert not path.exists()  # opened lazily
    exporter.export(IncidentFactory.create(
        opened_at_ns=T0, summary="ünïcode ✓", suspects=[{"key": "service.version", "value": "2.0.0"}]))
    exporter.export(IncidentFactory.create(opened_at_ns=T0, status="resolved", resolved_at_ns=T0 + 60_000_000_000,
                                           last_change="resolved", version=2))
    # Flushed per line: readable before shutdown.
    lines = path.read_text(encoding="utf-8").splitlines()
    exporter.shutdown()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert DESIGN_FIELDS <= first.keys()
    assert first["opened_at"] == "2026-02-15T14:29:00Z"
    assert first["resolved_at"] is None
    assert first["summary"] == "ünïcode ✓" and "ünïcode" in lines[0]  # ensure_ascii=False
    assert first["suspects"][0]["key"] == "service.version"
    assert second["status"] == "resolved"
    assert second["resolved_at"] == "2026-02-15T14:30:00Z"
    assert ", " not in lines[0]  # compact separators


def test_jsonl_appends_to_existing_file_and_is_thread_safe(tmp_path):
    path = tmp_path / "incidents.jsonl"
    path.write_text('{"existing":true}\n', encoding="utf-8")
    exporter = JsonlExporter(path)

    def worker(k: int) -> None:
        for n in range(25):
            exporter.export(IncidentFactory.create(id=f"inc_{k}_{n}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    exporter.shutdown()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"existing":true}'
    parsed = [json.loads(line) for line in lines[1:]]
    assert len({p["id"] for p in parsed}) == 100


def test_console_line_for_route_incident():
    stream = io.StringIO()
    ConsoleExporter(stream).export(IncidentFactory.create(
        "ERROR_RATE_SPIKE", id="inc_abc123", opened_at_ns=T0, confidence=0.91,
        service="checkout", method="POST", route="/api/payments",
        data={"metric": "error_rate", "current_value": 35.0, "threshold": 10.0,
              "baseline_value": 0.4, "window": "1m", "unit": "%"},
        suspects=[{"key": "service.version", "value": "2.0.0", "score": 0.87,
                   "bad_share": 0.95, "good_share": 0.08}],
    ))
    assert stream.getvalue() == (
        "2026-02-15T14:29:00Z OPENED  critical ERROR_RATE_SPIKE checkout POST /api/payments: "
        "error_rate 35.0% (threshold 10.0%, baseline 0.4%, 1m) conf 0.91; "
        "suspect service.version=2.0.0 (95% of bad vs 8% of good) [inc_abc123]\n"
    )
    assert "\x1b[" not in stream.getvalue()


def test_console_dependency_without_suspects_or_metric():
    incident = IncidentFactory.create(
        "UPSTREAM_DEGRADATION", id="inc_abc123", kind=DEPENDENCY, service="payments-db",
        severity="warning", suspects=[], confidence=0.91,
        summary="payments-db is slow", last_change="reopened",
    )
    incident.data = {}  # no metric at all (create() merges data=, so replace it)
    line = format_incident_line(incident)
    assert " REOPENED " in line
    assert "UPSTREAM_DEGRADATION dependency payments-db: payments-db is slow conf 0.91 [inc_abc123]" in line
    assert "suspect" not in line and "checkout" not in line


def test_console_partial_data_and_latency_units():
    incident = IncidentFactory.create(
        "LATENCY_ANOMALY", id="inc_abc123", last_change="acknowledged", confidence=0.91,
        suspects=[{"key": "k8s.pod.name", "value": "pod-7"}],
    )
    # Only these keys (create() merges data= over a full set, so replace it).
    incident.data = {"metric": "latency_p95", "current_value": 812.4, "unit": "ms"}
    line = format_incident_line(incident)
    assert "ACKNOWLEDGED" in line
    assert ": latency_p95 812ms conf 0.91; suspect k8s.pod.name=pod-7 [inc_abc123]" in line


def test_console_names_the_problem_and_its_root_so_a_cascade_reads_as_one_fault():
    incident = IncidentFactory.create("LATENCY_ANOMALY", id="inc_abc123", last_change="opened")
    incident.problem_id = "prb_1"
    incident.root_cause = {"kind": "network", "service": "timetable-service", "evidence": []}
    assert format_incident_line(incident).endswith("[inc_abc123 problem prb_1 (root: network into timetable-service)]")
    incident.root_cause = None  # a problem is a problem even before its root is known
    assert format_incident_line(incident).endswith("[inc_abc123 problem prb_1]")


def test_console_colours_only_on_a_tty():
    tty = _TtyStream()
    ConsoleExporter(tty).export(IncidentFactory.create(severity="critical"))
    assert "\x1b[31;1mcritical\x1b[0m" in tty.getvalue()
    plain = io.StringIO()
    ConsoleExporter(plain).export(IncidentFactory.create(severity="critical"))
    assert "\x1b[" not in plain.getvalue()
