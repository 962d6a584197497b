"""otel-ai command line: serve, demo, replay, analyze, incidents, problems, silences, check, bench."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from otel_ai.config import ConfigError, Settings, load_settings

DEFAULT_DATA_DIR = "otel-ai-data"
# Accepted before or after the subcommand: `otel-ai --data-dir X incidents list` and
# `otel-ai incidents list --data-dir X` mean the same.
GLOBAL_DEFAULTS = {"config": None, "data_dir": None, "admin_url": None, "verbose": False}


def _load(args) -> Settings:
    try:
        from dotenv import load_dotenv

        load_dotenv(Path.cwd() / ".env", override=False)  # the seed keeps its keys in .env
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        pass
    settings = load_settings(getattr(args, "config", None))
    receiver = settings.receiver
    for flag, attr in (("grpc_port", "grpc_port"), ("http_port", "http_port")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(receiver, attr, value)
    if getattr(args, "admin_port", None) is not None:
        settings.admin.port = args.admin_port
    if getattr(args, "host", None):
        receiver.host = args.host
        settings.admin.host = args.host
    return settings


def _global_flags(p: argparse.ArgumentParser, config: bool = True) -> argparse.ArgumentParser:
    """The global flags, on the top parser and on every subcommand. SUPPRESS keeps a
    subcommand's parser from overwriting a value given before the subcommand."""
    if config:
        p.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                       help="YAML config (the seed's events:/budget: blocks); defaults are embedded")
    p.add_argument("--data-dir", default=argparse.SUPPRESS, metavar="DIR",
                   help=f"incident store (default ./{DEFAULT_DATA_DIR}; demo and replay: a temporary directory)")
    p.add_argument("--admin-url", default=argparse.SUPPRESS, metavar="URL",
                   help="a running server's admin URL (default: the one `serve` recorded in the data dir, "
                        "else http://127.0.0.1:8888)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return p


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grpc-port", type=int, help="OTLP/gRPC port (default 4317; 0 = a free port)")
    p.add_argument("--http-port", type=int, help="OTLP/HTTP port (default 4318; 0 = a free port)")
    p.add_argument("--admin-port", type=int, help="admin HTTP port: /healthz /readyz /metrics /api/incidents (default 8888)")
    p.add_argument("--host", help="address to bind (default from config: 0.0.0.0; demo: 127.0.0.1)")
    p.add_argument("--incidents-jsonl", help="append one JSON snapshot per incident change to this file")


def _print_ports(app, out=sys.stderr) -> None:
    p = app.ports
    print(f"otel-ai listening: OTLP/gRPC :{p.grpc}  OTLP/HTTP :{p.http}/v1/traces,/v1/metrics  admin :{p.admin} "
          f"(/healthz /readyz /metrics /api/incidents)", file=out, flush=True)


def cmd_serve(args) -> int:
    from otel_ai import server_record
    from otel_ai.app import App
    from otel_ai.runtime import tune_for_ingestion

    settings = _load(args)
    tune_for_ingestion()
    data_dir = args.data_dir
    app = App(settings, data_dir, args.incidents_jsonl)
    app.start()
    server_record.write(data_dir, server_record.admin_url_for(settings.admin.host, app.ports.admin))
    _print_ports(app)
    for line in app.banner():
        print(f"otel-ai notifications: {line.strip()}", file=sys.stderr, flush=True)
    print(f"otel-ai baselines: {app.pipeline.baselines_origin}", file=sys.stderr, flush=True)
    try:
        _wait_for_signal()
        print("otel-ai: shutting down, draining accepted spans...", file=sys.stderr, flush=True)
    finally:
        server_record.remove(data_dir)
        app.stop()
    return 0


def _wait_for_signal(timeout_s: float | None = None) -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(timeout_s)


def cmd_demo(args) -> int:
    from otel_ai.demo import run_demo
    from otel_ai.runtime import tune_for_ingestion

    settings = _load(args)
    tune_for_ingestion()
    if not args.host:
        settings.receiver.host = settings.admin.host = "127.0.0.1"
    return run_demo(settings, args)


def cmd_replay(args) -> int:
    from otel_ai.replay import run_replay

    return run_replay(_load(args), args)


def cmd_check(args) -> int:
    from otel_ai.check import run_check

    return run_check(args)


def cmd_analyze(args) -> int:
    from otel_ai.analyze import run_analyze

    return run_analyze(_load(args), args)


def cmd_incidents(args) -> int:
    from otel_ai.lifecycle_cli import run_incidents

    return run_incidents(_load(args), args)


def cmd_problems(args) -> int:
    from otel_ai.lifecycle_cli import run_problems

    return run_problems(_load(args), args)


def cmd_silences(args) -> int:
    from otel_ai.lifecycle_cli import run_silences

    return run_silences(_load(args), args)


def cmd_bench(args) -> int:
    from otel_ai import bench
    from otel_ai.runtime import tune_for_ingestion

    tune_for_ingestion()  # before the baseline too: both receivers run in the one tuned process
    return bench.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _global_flags(argparse.ArgumentParser(
        prog="otel-ai", description="OpenTelemetry-native AI incident responder"))
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func, config: bool = True) -> argparse.ArgumentParser:
        p = _global_flags(sub.add_parser(name, help=help), config=config)
        p.set_defaults(func=func)
        return p

    _serve_args(command("serve", "receive OTLP traces and raise incidents", cmd_serve))
    p = command("demo", "serve plus built-in traffic with an injected fault (no keys needed)", cmd_demo)
    _serve_args(p)
    p.add_argument("--fault", default="bad_deploy", help="fault to inject (see otel_ai.testing.scenarios)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of live traffic (default 60)")
    p.add_argument("--fault-after", type=float, default=15.0, help="seconds of live traffic before the fault")
    p = command("replay", "replay recorded OTLP traces (the Collector's file exporter output) as fast as "
                          "possible", cmd_replay)
    p.add_argument("file", help="OTLP/JSON lines or length-prefixed protobuf, plain, gzip or zstd; '-' for stdin")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--incidents-jsonl", help="write incident snapshots here")
    p.add_argument("--quiet", action="store_true", help="no per-incident console lines")
    p = command("analyze", "re-run the analysis of one incident (Claude, or offline without a key)", cmd_analyze)
    p.add_argument("incident_id", metavar="INCIDENT_ID")
    p.add_argument("--offline-store", action="store_true", help="do not ask a running server; update the store")
    p.add_argument("--json", action="store_true", help="print the incident snapshot as JSON")
    p = command("incidents", "list, show or acknowledge incidents", cmd_incidents)
    actions = p.add_subparsers(dest="action", required=True)
    q = _global_flags(actions.add_parser("list", help="newest first"))
    q.add_argument("--status", choices=("open", "acknowledged", "resolved"))
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q = _global_flags(actions.add_parser("show", help="one incident with its evidence and analysis"))
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--json", action="store_true")
    q = _global_flags(actions.add_parser("ack", help="acknowledge: stops reminders and updates the Slack message"))
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--by", help="who acknowledges (default: your user name)")
    p = command("problems", "list or show problems: incidents with one root cause", cmd_problems)
    actions = p.add_subparsers(dest="action", required=True)
    q = _global_flags(actions.add_parser("list", help="newest first"))
    q.add_argument("--status", choices=("open", "resolved"))
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q = _global_flags(actions.add_parser("show", help="one problem: its root, the chain to it, its incidents"))
    q.add_argument("problem_id", metavar="PROBLEM_ID")
    q.add_argument("--json", action="store_true")
    p = command("silences", "mute notifications for matching incidents for a while", cmd_silences)
    actions = p.add_subparsers(dest="action", required=True)
    q = _global_flags(actions.add_parser("add", help="e.g. silences add --service checkout --duration 2h "
                                                     "--comment 'deploy'"))
    for field in ("type", "service", "route", "severity"):
        q.add_argument(f"--{field}")
    q.add_argument("--duration", required=True, help="e.g. 30m, 2h")
    q.add_argument("--comment", required=True, help="why, for whoever is on call next")
    q.add_argument("--by")
    q = _global_flags(actions.add_parser("list"))
    q.add_argument("--all", action="store_true", help="include expired ones")
    q = _global_flags(actions.add_parser("expire"))
    q.add_argument("silence_id", metavar="SILENCE_ID")
    command("check", "check the configuration, keys and connections before going live", cmd_check)
    p = command("bench", "measure ingestion: spans/s, CPU per span, Export latency, RSS", cmd_bench, config=False)
    from otel_ai import bench

    bench.add_arguments(p)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.data_dir is None and args.command not in ("demo", "replay"):
        args.data_dir = DEFAULT_DATA_DIR
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"otel-ai: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"otel-ai: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
