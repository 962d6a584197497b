"""Recordings replay reads: every shape of the Collector's file exporter output, plain,
zstd or gzip, and clear errors for a broken file."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.cli import main
from otel_ai.receiver.consumer import JSON, PROTOBUF
from otel_ai.receiver.otlp_json import parse_otlp_json, to_otlp_json
from otel_ai.recordings import MAX_BODY_BYTES, Recording, RecordingError
from otel_ai.testing.scenarios import scenario

REQUESTS = [ExportTraceServiceRequest.FromString(b)
            for b in scenario("bad_pod", seed=3, warmup_s=5, rate_scale=0.05).serialized_batches(6, 2.0)]


def _lines() -> bytes:
    return b"".join(to_otlp_json(r).encode() + b"\n" for r in REQUESTS)


def _prefixed(bodies: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in bodies)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


FORMATS = {
    "json lines": (_lines, JSON),
    "json lines, gzip": (lambda: gzip.compress(_lines()), JSON),
    "json lines, zstd stream": (lambda: _zstd(_lines()), JSON),
    "proto": (lambda: _prefixed([r.SerializeToString() for r in REQUESTS]), PROTOBUF),
    "proto, zstd per record (legacy compression)": (
        lambda: _prefixed([_zstd(r.SerializeToString()) for r in REQUESTS]), PROTOBUF),
    "json, zstd per record (legacy compression)": (
        lambda: _prefixed([_zstd(to_otlp_json(r).encode()) for r in REQUESTS]), JSON),
    "proto, zstd stream": (lambda: _zstd(_prefixed([r.SerializeToString() for r in REQUESTS])), PROTOBUF),
    "proto, zstd stream, gzip": (
        lambda: gzip.compress(_zstd(_prefixed([r.SerializeToString() for r in REQUESTS]))), PROTOBUF),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_file_exporter_shape_reads_back_the_requests(tmp_path: Path, name: str) -> None:
    make, encoding = FORMATS[name]
    path = tmp_path / "recording"
    path.write_bytes(make())
    with Recording.open(str(path)) as recording:
        records = list(recording)
        assert recording.position == path.stat().st_size
    assert [r.encoding for r in records] == [encoding] * len(REQUESTS)
    decoded = [parse_otlp_json(r.body) if r.encoding == JSON else ExportTraceServiceRequest.FromString(r.body)
               for r in records]
    assert decoded == REQUESTS


def test_a_truncated_or_implausible_length_prefix_is_a_clear_error(tmp_path: Path) -> None:
    body = REQUESTS[0].SerializeToString()
    truncated = tmp_path / "truncated"
    truncated.write_bytes(_prefixed([body])[:-5])
    with pytest.raises(RecordingError, match="record 1: truncated body"):
        list(Recording.open(str(truncated)))
    huge = tmp_path / "huge"
    huge.write_bytes(struct.pack(">I", MAX_BODY_BYTES + 1) + b"\x0a\x00")
    with pytest.raises(RecordingError, match="record 1: length .* exceeds"):
        list(Recording.open(str(huge)))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_cut_or_damaged_gzip_stream_is_a_clear_error_after_the_records_before_it(tmp_path: Path,
                                                                                    damage: str) -> None:
    data = gzip.compress(_lines() * 50)
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(data[:-30] if damage == "truncated" else data[:len(data) // 2] + b"\xff" * 64 + data[len(data) // 2:])
    read = []
    with pytest.raises(RecordingError, match="the gzip stream is truncated or damaged"):
        read.extend(Recording.open(str(path)))
    assert len(read) >= len(REQUESTS)


def test_replay_reads_a_gzipped_recording_and_reports_its_speed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "traffic.jsonl.gz"
    path.write_bytes(gzip.compress(_lines() + b"not OTLP JSON\n"))
    assert main(["replay", str(path), "--quiet", "--no-progress"]) == 0
    err = capsys.readouterr().err
    summary = err.strip().splitlines()[-1]
    spans = sum(len(ss.spans) for r in REQUESTS for rs in r.resource_spans for ss in rs.scope_spans)
    assert f"{len(REQUESTS) + 1} records (gzip compression), {spans} spans" in summary
    assert "spans/s" in summary and "1 bad records" in summary
    assert f"line {len(REQUESTS) + 1} skipped: invalid JSON" in err


def test_replay_names_only_the_first_bad_records(tmp_path: Path, capsys) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_text("{}\n" + "{oops\n" * 30)
    assert main(["replay", str(path), "--quiet", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 20
    assert "30 bad records (10 not shown)" in err


def test_replay_of_an_unreadable_file_says_so(tmp_path: Path, capsys) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--quiet"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_json_lines_are_not_mistaken_for_length_prefixed(tmp_path: Path) -> None:
    path = tmp_path / "spaced.jsonl"
    path.write_bytes(b"\n  " + json.dumps({"resourceSpans": []}).encode() + b"\n")
    assert [r.encoding for r in Recording.open(str(path))] == [JSON]
