"""The command line against a real `otel-ai serve` process: the server record in the data
dir, `incidents ack` finding the server on a random admin port and updating the (fake)
Slack message, a second `serve` on taken ports, global flags in either position."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai import server_record
from otel_ai.cli import parse_args
from otel_ai.testing.fake_slack import FakeSlack
from otel_ai.testing.harness import wait_for
from otel_ai.testing.send_traffic import recent_traffic, send

CHANNEL = "#incidents"
OTEL_AI = [sys.executable, "-m", "otel_ai"]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*OTEL_AI, *args], capture_output=True, text=True, timeout=timeout, env=env)


class Server:
    def __init__(self, process: subprocess.Popen, data_dir: Path, env: dict, config: Path) -> None:
        self.process, self.data_dir, self.env, self.config = process, data_dir, env, config

    @property
    def admin_url(self) -> str:
        return wait_for("the server record", lambda: server_record.running_admin_url(self.data_dir))

    def ports(self) -> dict[str, int]:
        line = wait_for("the listening line", lambda: self._listening_line())
        return {name: int(line.split(f"{name} :")[1].split()[0].split("/")[0])
                for name in ("OTLP/gRPC", "OTLP/HTTP", "admin")}

    def _listening_line(self) -> str | None:
        log = (self.data_dir.parent / "serve.log").read_text()
        return next((line for line in log.splitlines() if "otel-ai listening" in line), None)


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, slack: FakeSlack) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "otel-ai.yaml"
    config.write_text("slack:\n  groupWait: 0.2s\nreceiver:\n  host: 127.0.0.1\nadmin:\n  host: 127.0.0.1\n")
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_INCIDENT_CHANNEL": CHANNEL,
           "SLACK_API_URL": slack.url, "SLACK_SIGNING_SECRET": slack.signing_secret, "AI_MODE": "notify",
           "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("ANTHROPIC_API_KEY", None)
    data_dir = root / "data"
    with open(root / "serve.log", "w") as log:
        # Global flags after the subcommand here, before it in the commands below.
        process = subprocess.Popen([*OTEL_AI, "serve", "--config", str(config), "--data-dir", str(data_dir),
                                    "--grpc-port", "0", "--http-port", "0", "--admin-port", "0"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    running = Server(process, data_dir, env, config)
    try:
        running.admin_url  # noqa: B018 - waits for the record
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)


def send_failing_traffic(http_port: int) -> None:
    send(f"http://127.0.0.1:{http_port}", recent_traffic())


def first_post(slack: FakeSlack, incident_id: str):
    """The first top-level message of a notification (keyed by the incident, or its problem)."""
    return next((c for c in slack.calls_to("chat.postMessage") if c.status == 200 and not c.args.get("thread_ts")
                 and (c.args.get("metadata") or {}).get("event_payload", {}).get("incident_id") == incident_id),
                None)


def ack_value(post) -> str | None:
    return next((e.get("value") for b in post.args["blocks"] if b["type"] == "actions" for e in b["elements"]
                 if e.get("action_id") == "ack_incident"), None)


def test_serve_records_its_admin_url_and_pid(server: Server) -> None:
    record = json.loads((server.data_dir / server_record.RECORD_NAME).read_text())
    assert record["pid"] == server.process.pid
    assert record["admin_url"] == f"http://127.0.0.1:{server.ports()['admin']}"
    with _OPENER.open(f"{record['admin_url']}/healthz", timeout=5) as response:
        assert response.read() == b"ok"


def test_incidents_ack_finds_the_server_and_updates_slack(server: Server, slack: FakeSlack) -> None:
    send_failing_traffic(server.ports()["OTLP/HTTP"])

    def posted_incident() -> str | None:
        """The incident whose message went out (a problem's lead): its Acknowledge button's."""
        with _OPENER.open(f"{server.admin_url}/api/incidents?status=open", timeout=5) as response:
            listing = json.load(response)["incidents"]
        return next((i["id"] for i in listing if first_post(slack, i.get("problem_id") or i["id"])
                     and ack_value(first_post(slack, i.get("problem_id") or i["id"])) == i["id"]), None)

    incident_id = wait_for("an open incident posted to Slack", posted_incident, timeout_s=30)
    with _OPENER.open(f"{server.admin_url}/api/incidents/{incident_id}", timeout=5) as response:
        post = first_post(slack, json.load(response).get("problem_id") or incident_id)
    channel, ts = post.response["channel"], post.response["ts"]

    # No --admin-url: the CLI reads it from the data dir; the global flag comes first here.
    result = cli("--data-dir", str(server.data_dir), "incidents", "ack", incident_id, "--by", "alice", env=server.env)

    assert result.returncode == 0, result.stderr
    assert "acknowledged by alice" in result.stdout and server.admin_url in result.stdout
    wait_for("the acknowledged Slack message", lambda: "Acknowledged by alice" in json.dumps(
        slack.messages[(channel, ts)]["blocks"]), timeout_s=15)


def test_ack_says_unknown_for_an_id_nobody_has(server: Server) -> None:
    result = cli("incidents", "ack", "inc_0000000000000000", "--data-dir", str(server.data_dir), env=server.env)

    assert result.returncode == 1
    assert "unknown incident 'inc_0000000000000000'" in result.stderr


def test_second_serve_on_taken_ports_exits_naming_the_port(server: Server, tmp_path: Path) -> None:
    ports = server.ports()
    for flag, name, taken in (("--grpc-port", "OTLP/gRPC", ports["OTLP/gRPC"]),
                              ("--http-port", "OTLP/HTTP", ports["OTLP/HTTP"]),
                              ("--admin-port", "admin", ports["admin"])):
        free = {"--grpc-port": "0", "--http-port": "0", "--admin-port": "0", flag: str(taken)}
        result = cli("serve", "--config", str(server.config), "--data-dir", str(tmp_path / flag),
                     *[part for item in free.items() for part in item], env=server.env)
        assert result.returncode == 1, result.stderr
        assert f"{name}" in result.stderr and f"port {taken} " in result.stderr and "already in use" in result.stderr
    assert server.process.poll() is None  # the first server is unharmed


@pytest.mark.parametrize("argv", [
    ["--data-dir", "/d", "--admin-url", "http://h:1", "incidents", "ack", "inc_1"],
    ["incidents", "--data-dir", "/d", "ack", "inc_1", "--admin-url", "http://h:1"],
    ["incidents", "ack", "inc_1", "--data-dir", "/d", "--admin-url", "http://h:1"],
])
def test_global_flags_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = parse_args(argv)
    assert (args.data_dir, args.admin_url, args.incident_id) == ("/d", "http://h:1", "inc_1")


def test_global_flag_defaults() -> None:
    assert parse_args(["incidents", "list"]).data_dir == "otel-ai-data"
    assert parse_args(["replay", "x.jsonl"]).data_dir is None  # replay uses a temporary store
    assert parse_args(["-v", "check"]).verbose is True


def test_a_stale_record_is_ignored(tmp_path: Path) -> None:
    server_record.write(tmp_path, "http://127.0.0.1:9")
    assert server_record.running_admin_url(tmp_path) == "http://127.0.0.1:9"  # this process is alive
    record = json.loads((tmp_path / server_record.RECORD_NAME).read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record["pid"] = int(dead.stdout)
    (tmp_path / server_record.RECORD_NAME).write_text(json.dumps(record))
    assert server_record.running_admin_url(tmp_path) is None
    assert server_record.resolve_admin_url(None, tmp_path) == server_record.DEFAULT_ADMIN_URL
    assert server_record.resolve_admin_url("http://x:1", tmp_path) == "http://x:1"


def test_admin_url_for_wildcard_hosts() -> None:
    assert server_record.admin_url_for("0.0.0.0", 8888) == "http://127.0.0.1:8888"
    assert server_record.admin_url_for("::", 9) == "http://[::1]:9"
    assert server_record.admin_url_for("10.1.2.3", 9) == "http://10.1.2.3:9"


def test_no_store_write_behind_a_running_servers_back(server: Server) -> None:
    # A wrong --admin-url must not fall back to the store the running server owns.
    result = cli("incidents", "ack", "inc_0000000000000001", "--data-dir", str(server.data_dir),
                 "--admin-url", "http://127.0.0.1:9", env=server.env)
    assert result.returncode == 1
    assert f"runs at {server.admin_url}, not http://127.0.0.1:9" in result.stderr


def test_messages_tell_unknown_from_resolved() -> None:
    from otel_ai.lifecycle_cli import _why_not_open

    assert "unknown incident 'inc_1'" in _why_not_open("inc_1", None)
    resolved = _why_not_open("inc_2", {"status": "resolved", "resolved_at": "2026-11-30T16:00:00Z"})
    assert resolved == "incident inc_2 was resolved at 2026-11-30T16:00:00Z; nothing to acknowledge"
