"""otel-ai analyze INCIDENT_ID: re-run the analysis of one incident.

A running server is asked first (POST /api/incidents/{id}/analyze on the admin URL that
`serve` recorded in the data dir, or --admin-url),
so that the server's in-memory incident gets the result and no later change of its
own overwrites it. With no server answering, the store is updated directly.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from otel_ai import server_record
from otel_ai.analysis.render import format_analysis
from otel_ai.config import Settings


def run_analyze(settings: Settings, args) -> int:
    snapshot = _via_server(settings, args) if not args.offline_store else None
    if snapshot is None:
        snapshot = _via_store(settings, args)
        if snapshot is None:
            return 1
    if args.json:
        print(json.dumps(snapshot, indent=2, ensure_ascii=False))
    else:
        print(f"{snapshot['id']}  {snapshot['type']}  {snapshot['severity']}  {snapshot['status']}")
        print(snapshot["summary"])
        print()
        print(format_analysis(snapshot.get("analysis") or {}))
    return 0


def _via_server(settings: Settings, args) -> dict | None:
    admin_url = server_record.resolve_admin_url(args.admin_url, args.data_dir).rstrip("/")
    url = f"{admin_url}/api/incidents/{args.incident_id}/analyze"
    request = urllib.request.Request(url, method="POST", data=b"")
    if settings.admin.token:
        request.add_header("Authorization", f"Bearer {settings.admin.token}")
    try:
        with urllib.request.urlopen(request, timeout=settings.analysis.deadline + 15) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        print(f"otel-ai analyze: the server at {admin_url} answered {exc.code}: {detail}", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, OSError):
        if server_record.refuse_store_while_running(args.data_dir, admin_url):
            raise SystemExit(1) from None
        return None  # no server running: work on the store


def _via_store(settings: Settings, args) -> dict | None:
    from otel_ai.analysis.related import rank_related
    from otel_ai.app import build_analyzer
    from otel_ai.store import IncidentStore

    store = IncidentStore(Path(args.data_dir) / "incidents.db")
    try:
        incident = store.get(args.incident_id)
        if incident is None:
            print(f"otel-ai analyze: no incident {args.incident_id!r} in {args.data_dir}", file=sys.stderr)
            return None
        analyzer = build_analyzer(settings, store)
        incident.analysis = analyzer.analyze(incident, rank_related(incident, store.list(status="open", limit=50)))
        incident.version += 1
        incident.last_change = "analyzed"
        store.save(incident)
        analyzer.close()
        return incident.snapshot()
    finally:
        store.close()
