"""otel-ai bench end to end: an in-process server driven by a client process."""
from __future__ import annotations

import argparse
import json

import pytest

from otel_ai import bench


def run_bench(capsys, argv: list[str]) -> dict:
    """`otel-ai bench ARGV` in process; its JSON report (the last line printed)."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_small_run_reports_consistent_numbers(capsys):
    report = run_bench(capsys, ["--spans", "20000", "--json"])
    assert report["spans_sent"] >= 20000
    assert report["spans_received"] == report["spans_sent"]  # no loss
    assert report["spans_per_s"] > 0
    assert report["cpu_us_per_span"] > 0
    assert report["parse_floor_us_per_span"] > 0
    assert report["export_p99_ms"] >= report["export_p50_ms"] > 0
    assert report["export_max_ms"] >= report["export_p99_ms"]
    assert report["server_errors"] == 0 and report["client_errors"] == 0
    assert report["rss_peak_mib"] > 0


def test_bench_baseline_reports_the_minimal_receiver_and_the_ratio(capsys):
    report = run_bench(capsys, ["--spans", "20000", "--baseline", "--routes", "600", "--json"])
    assert report["baseline_cpu_us_per_span"] > 0
    # The report rounds each number on its own: the ratio of the rounded ones may differ in the last digit.
    ratio = report["cpu_us_per_span"] / report["baseline_cpu_us_per_span"]
    assert report["cpu_over_baseline"] == pytest.approx(ratio, abs=2e-3)
    assert report["spans_received"] == report["spans_sent"] >= 20000
    assert report["subjects"] > 100  # --routes spread the SERVER spans (the generator has ~30 routes)
    assert report["decoder"].startswith(("native", "python"))


def test_minimal_receiver_counts_spans_per_route():
    blobs = bench.build_batches(64, target_batches=3)
    counter = bench.RouteCounter()
    results = [counter.consume(blob, "test") for blob in blobs]
    assert counter.spans == sum(r.spans for r in results) == sum(counter.counts.values()) > 0
    assert any(route.startswith("/api/") for route in counter.counts)


def test_bench_over_otlp_http_loses_nothing(capsys):
    report = run_bench(capsys, ["--spans", "20000", "--http", "--in-flight", "4", "--json"])
    assert report["transport"] == "http"
    assert report["spans_received"] == report["spans_sent"] >= 20000
    assert report["server_errors"] == 0 and report["client_errors"] == 0


def test_bench_metrics_reports_points_per_second_and_cpu_per_point(capsys):
    report = run_bench(capsys, ["--metrics", "--streams", "600", "--rounds", "3", "--json"])
    assert report["data_points"] == 600 * 3  # every point of every export went through
    assert report["streams"] == 600  # each cumulative stream has its delta state
    assert report["data_points_per_s"] > 0 and report["cpu_us_per_data_point"] > 0
    print(f"\nbench --metrics (tiny, indicative): {report['data_points_per_s']} points/s, "
          f"{report['cpu_us_per_data_point']} µs CPU per point")


def test_bench_repeat_reports_the_medians_of_fresh_servers(capsys):
    report = run_bench(capsys, ["--spans", "20000", "--repeat", "3", "--json"])
    runs = report["runs"]
    assert len(runs) == 3 and all(run["cpu_us_per_span"] > 0 for run in runs)
    assert report["cpu_us_per_span"] == sorted(run["cpu_us_per_span"] for run in runs)[1]
    assert report["spans_received"] == 20_000 or report["spans_received"] == report["spans_sent"]
