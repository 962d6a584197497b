"""The README's five-minute guide, run as written: its bash block, command for command, in
one shell inside a private network namespace (so its default ports cannot collide with
anything else on the machine). The test only adds waits between steps and fills in the
incident id the guide tells the reader to copy."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE_HEADING = "## Five-minute guide"
SLACK_HISTORY = "http://127.0.0.1:8788/api/conversations.history?channel=%23incidents"


def guide_commands() -> list[str]:
    """The guide's bash block as logical commands (continuations joined, comments dropped)."""
    text = README.read_text()
    block = text[text.index(GUIDE_HEADING):].split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands, current = [], ""
    for line in block.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def _wait(check: str, what: str, seconds: int = 60) -> str:
    return (f"for _ in $(seq {seconds * 5}); do {check} && break; sleep 0.2; done; "
            f"{check} || {{ echo 'guide test: timed out waiting for {what}'; exit 97; }}")


def _waits_after(command: str) -> list[str]:
    if "fake_slack" in command:
        return [_wait("curl -sf -o /dev/null http://127.0.0.1:8788/api/api.test", "the fake Slack")]
    if "fake_anthropic" in command:
        return [_wait("curl -s -o /dev/null http://127.0.0.1:8787/", "the fake Anthropic API")]
    if command.startswith(".venv/bin/otel-ai serve"):
        return [_wait("curl -sf -o /dev/null http://127.0.0.1:8888/readyz", "otel-ai to be ready")]
    if "send_traffic" in command:
        return [_wait("curl -sf 'http://127.0.0.1:8888/api/incidents?status=open' | grep -q '\"id\"'",
                      "an open incident")]
    if "incidents ack" in command:
        # The message (posted after slack.groupWait, 10 s by default) shows the acknowledgement.
        return [_wait(f"curl -sf -H 'Authorization: Bearer xoxb-test' '{SLACK_HISTORY}' | grep -q 'Acknowledged by you'",
                      "the acknowledged Slack message")]
    return []


# The reader copies an id from `incidents list`; the test takes the incident whose Slack
# message it can watch: the one its Acknowledge button names (the incidents of one problem
# share its message, which is keyed by the problem).
PICK_POSTED_INCIDENT = f"""import json, sys
messages = json.load(sys.stdin)["messages"]
print(next(e["value"] for m in messages if m.get("metadata") for b in m.get("blocks") or []
           if b["type"] == "actions" for e in b["elements"] if e.get("action_id") == "ack_incident"))"""
ID_OF_POSTED_INCIDENT = [
    _wait(f"curl -sf -H 'Authorization: Bearer xoxb-test' '{SLACK_HISTORY}&include_all_metadata=true' "
          "| grep -q incident_id",
          "the first Slack message (after slack.groupWait)"),
    f"INCIDENT_ID=$(curl -sf -H 'Authorization: Bearer xoxb-test' '{SLACK_HISTORY}&include_all_metadata=true' | "
    f"{sys.executable} -c '{PICK_POSTED_INCIDENT}')",
]


def test_the_guide_block_is_what_this_test_expects() -> None:
    commands = guide_commands()
    assert any(c.startswith(".venv/bin/otel-ai serve") for c in commands)
    assert any("incidents ack INCIDENT_ID" in c for c in commands)
    assert all(c.startswith((".venv/bin/", "export ", "curl ")) for c in commands), commands


def test_the_readme_guide_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a private network namespace")
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private network namespace here: {probe.stderr.strip()}")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the guide's .venv/bin/... paths
    lines = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT", "ip link set lo up"]
    for command in guide_commands():
        if "INCIDENT_ID" in command:
            lines.extend(ID_OF_POSTED_INCIDENT)
            command = command.replace("INCIDENT_ID", '"$INCIDENT_ID"')
        lines.append(command if command.endswith("&") else f"{command} || exit $?")
        lines.extend(_waits_after(command))
    lines.append("echo; curl -sf http://127.0.0.1:8888/api/incidents/$INCIDENT_ID; echo")
    script = "\n".join(lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "OTEL_", "AI_"))}
    result = subprocess.run(["unshare", "-n", "bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=150, env=env)
    output = result.stdout
    assert result.returncode == 0, f"{output[-3000:]}\n{result.stderr[-3000:]}\n--- script ---\n{script}"

    incident = json.loads(output.strip().splitlines()[-1])
    assert incident["status"] == "acknowledged" and incident["acknowledged_by"] == "you"
    assert incident["analysis"]["source"] == "claude"  # answered by the fake Anthropic API
    assert "POST /v1/messages" in output  # the fake Anthropic's line
    assert "chat.postMessage #incidents" in output  # the fake Slack's line
    assert "<title>Incidents</title>" in output  # the page, fetched by the guide's curl
    assert (tmp_path / "otel-ai-data" / "incidents.db").exists()
