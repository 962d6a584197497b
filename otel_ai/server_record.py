"""Where a running `otel-ai serve` can be reached, kept in its data dir.

`serve` writes server.json (pid and admin URL) once it listens and removes it on a
clean stop; `incidents ack` and `analyze` read it, so they find the server on any
admin port. A record whose process is gone (a crash, kill -9) is ignored.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RECORD_NAME = "server.json"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8888"


def admin_url_for(host: str, port: int) -> str:
    """The URL a local client uses for an admin port bound to `host`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write(data_dir: str | Path, admin_url: str) -> Path:
    path = Path(data_dir) / RECORD_NAME
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "admin_url": admin_url, "started_at": time.time()}),
                         encoding="utf-8")
    temporary.replace(path)  # readers never see half a record
    return path


def remove(data_dir: str | Path) -> None:
    """Remove the record if it is this process's (a newer server may have replaced it)."""
    path = Path(data_dir) / RECORD_NAME
    record = _read(path)
    if record is not None and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def running_admin_url(data_dir: str | Path) -> str | None:
    """The admin URL of the live server recorded in data_dir, or None."""
    record = _read(Path(data_dir) / RECORD_NAME)
    if record is None or not isinstance(record.get("admin_url"), str) or not _alive(record.get("pid")):
        return None
    return record["admin_url"]


def resolve_admin_url(explicit: str | None, data_dir: str | Path) -> str:
    """--admin-url if given, else the recorded server's, else the default port."""
    return explicit or running_admin_url(data_dir) or DEFAULT_ADMIN_URL


def refuse_store_while_running(data_dir: str | Path, tried_url: str) -> bool:
    """True (after saying why on stderr) when a live server owns data_dir although
    tried_url did not answer: writing to its store would be overwritten by the server's
    own state, so the CLI must not fall back to the store then."""
    running = running_admin_url(data_dir)
    if running is None:
        return False
    where = "does not answer" if running == tried_url else f"runs at {running}, not {tried_url}"
    print(f"otel-ai: the server of {data_dir} (see {Path(data_dir) / RECORD_NAME}) {where}; "
          "nothing changed", file=sys.stderr)
    return True


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True
