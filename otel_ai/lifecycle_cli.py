"""otel-ai incidents list|show|ack, otel-ai problems list|show and otel-ai silences add|list|expire.

Reads go straight to the SQLite store (safe next to a running server: WAL mode).
Acknowledge asks the running server first, because it holds open incidents in memory
and would otherwise overwrite the change; with no server it runs the same incident
stage and notification policy on the store, so the outbox gets the updates (Slack,
PagerDuty, webhook) for the next start.
"""
from __future__ import annotations

import getpass
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from otel_ai import server_record
from otel_ai.analysis.render import format_analysis
from otel_ai.config import Settings
from otel_ai.exporters.store import StoreExporter
from otel_ai.incidents import IncidentManager
from otel_ai.problems import root_title
from otel_ai.model import Incident
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.policy import NotificationPolicy
from otel_ai.notify.silences import SilenceError, Silences
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import IncidentStore, Problem
from otel_ai.timefmt import parse_duration, rfc3339


def _store(args) -> IncidentStore:
    path = Path(args.data_dir) / "incidents.db"
    if not path.exists():
        raise SystemExit(f"otel-ai: no incident store at {path} (use --data-dir)")
    return IncidentStore(path)


def run_incidents(settings: Settings, args) -> int:
    if args.action == "ack":
        return _ack(settings, args)
    store = _store(args)
    try:
        if args.action == "list":
            return _shown(store.list(status=args.status, limit=args.limit), args.json, _print_table)
        incident = store.get(args.incident_id)
        return _shown(incident, args.json, _print_incident, _why_not_open(args.incident_id, None))
    finally:
        store.close()


def _shown(found, as_json: bool, print_it, missing: str = "") -> int:
    """Print what was found (one record or a list) as JSON or for people; 1 when nothing was."""
    if found is None:
        print(f"otel-ai: {missing}", file=sys.stderr)
        return 1
    if as_json:
        snapshots = [f.snapshot() for f in found] if isinstance(found, list) else found.snapshot()
        print(json.dumps(snapshots, indent=2, ensure_ascii=False))
    else:
        print_it(found)
    return 0


def _print_table(incidents: list[Incident]) -> None:
    if not incidents:
        print("no incidents")
        return
    print(f"{'ID':<21} {'OPENED':<20} {'STATUS':<12} {'SEVERITY':<8} {'TYPE':<25} WHERE")
    for i in incidents:
        where = i.subject.label() if i.subject.kind != "route" else f"{i.subject.service} {i.subject.label()}"
        status = i.status + (f" ({i.acknowledged_by})" if i.status == "acknowledged" and i.acknowledged_by else "")
        print(f"{i.id:<21} {rfc3339(i.opened_at_ns):<20} {status:<12} {i.severity:<8} {i.type:<25} {where}")


def _print_incident(incident: Incident) -> None:
    s = incident.snapshot()
    print(f"{s['id']}  {s['type']}  {s['severity']}  {s['status']}  v{s['version']}")
    print(s["summary"])
    print(f"opened {s['opened_at']}  updated {s['updated_at']}"
          + (f"  resolved {s['resolved_at']}" if s["resolved_at"] else "")
          + (f"  acknowledged by {s['acknowledged_by']}" if s["acknowledged_by"] else ""))
    for suspect in s["suspects"][:3]:
        print(f"  suspect {suspect['key']}={suspect['value']}: {suspect['bad_share']:.0%} of bad vs "
              f"{suspect['good_share']:.0%} of good")
    for trace_id in s["context"].get("exemplar_trace_ids", [])[:3]:
        print(f"  exemplar trace {trace_id}")
    if s["analysis"]:
        print()
        print(format_analysis(s["analysis"]))


def _ack(settings: Settings, args) -> int:
    who = args.by or f"{getpass.getuser()} (cli)"
    admin_url = server_record.resolve_admin_url(args.admin_url, args.data_dir).rstrip("/")
    request = urllib.request.Request(f"{admin_url}/api/incidents/{args.incident_id}/ack", method="POST",
                                     data=json.dumps({"by": who}).encode(),
                                     headers={"Content-Type": "application/json"})
    if settings.admin.token:
        request.add_header("Authorization", f"Bearer {settings.admin.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            snapshot = json.load(response)
        print(f"{snapshot['id']} acknowledged by {snapshot['acknowledged_by']} (via {admin_url}; "
              "the Slack message is updated now)")
        return 0
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            print(f"otel-ai: {_why_not_open(args.incident_id, _server_snapshot(admin_url, args.incident_id))}",
                  file=sys.stderr)
        else:
            print(f"otel-ai: {admin_url} answered {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}",
                  file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError):
        if server_record.refuse_store_while_running(args.data_dir, admin_url):
            return 1
        return _ack_in_store(settings, args, who)


def _server_snapshot(admin_url: str, incident_id: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{admin_url}/api/incidents/{incident_id}", timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _why_not_open(incident_id: str, snapshot: dict | None) -> str:
    """Say which: an id nobody knows, or an incident that is over."""
    if snapshot is None:
        return f"unknown incident {incident_id!r}: no incident has this id (see `otel-ai incidents list`)"
    if snapshot.get("status") == "resolved":
        return f"incident {incident_id} was resolved at {snapshot.get('resolved_at')}; nothing to acknowledge"
    return f"incident {incident_id} is {snapshot.get('status')}; nothing to acknowledge"


def _ack_in_store(settings: Settings, args, who: str) -> int:
    """The same path the server takes: the incident stage acknowledges, and the notification
    policy queues each notifier's update (Slack message and thread note, PagerDuty
    acknowledge, webhook) in the outbox. Synchronous: no stage threads here."""
    from otel_ai.app import Credentials, build_notifiers

    store = _store(args)
    try:
        notifiers, _ = build_notifiers(settings, Credentials.from_env())
        policy = NotificationPolicy(settings, notifiers, Outbox(store), Silences(store), store)
        sink = StoreExporter(store)

        def publish(incident: Incident) -> None:
            sink.export(incident)
            policy.export(incident)

        incidents = IncidentManager(settings, store, publish, SelfMetrics())
        now = time.time_ns()
        incidents.restore(now)
        incident = incidents.acknowledge(args.incident_id, who, now)
        if incident is None:
            stored = store.get(args.incident_id)
            print(f"otel-ai: {_why_not_open(args.incident_id, stored.snapshot() if stored else None)}",
                  file=sys.stderr)
            return 1
        print(f"{incident.id} acknowledged by {incident.acknowledged_by} "
              "(no server running: stored; notifiers are updated when the server next starts)")
        return 0
    finally:
        store.close()


def run_problems(settings: Settings, args) -> int:
    store = _store(args)
    try:
        if args.action == "list":
            return _shown(store.problems(status=args.status, limit=args.limit), args.json, _print_problems)
        return _shown(store.problem(args.problem_id), args.json, _print_problem,
                      f"unknown problem {args.problem_id!r} (see `otel-ai problems list`)")
    finally:
        store.close()


def _print_problems(problems: list[Problem]) -> None:
    if not problems:
        print("no problems")
        return
    print(f"{'ID':<21} {'OPENED':<20} {'STATUS':<9} {'INCIDENTS':>9}  ROOT CAUSE")
    for p in problems:
        print(f"{p.id:<21} {rfc3339(p.opened_at_ns):<20} {p.status:<9} {len(p.members):>9}  {root_title(p.root_cause)}")


def _print_problem(problem: Problem) -> None:
    s = problem.snapshot()
    print(f"{s['id']}  {s['status']}  root cause: {root_title(problem.root_cause)}")
    print(f"opened {s['opened_at']}  updated {s['updated_at']}"
          + (f"  resolved {s['resolved_at']}" if s["resolved_at"] else ""))
    print("chain:")
    for hop in problem.root_cause.get("evidence") or []:
        print(f"  {hop.get('component')}: {hop.get('metric')} {hop.get('baseline')} -> {hop.get('now')}")
    print("incidents:")
    _print_table(problem.members)


def run_silences(settings: Settings, args) -> int:
    store = IncidentStore(Path(args.data_dir) / "incidents.db")
    silences = Silences(store)
    try:
        if args.action == "add":
            matchers = {k: getattr(args, k) for k in ("type", "service", "route", "severity") if getattr(args, k)}
            try:
                silence = silences.add(matchers, parse_duration(args.duration), args.by or getpass.getuser(),
                                       args.comment or "")
            except (SilenceError, ValueError) as exc:
                print(f"otel-ai: {exc}", file=sys.stderr)
                return 2
            print(f"{silence.id} silences {silence.matchers} until {rfc3339(silence.ends_at_ns)}")
        elif args.action == "expire":
            if not silences.expire(args.silence_id):
                print(f"otel-ai: no active silence {args.silence_id}", file=sys.stderr)
                return 1
            print(f"{args.silence_id} expired")
        else:
            active = silences.list(include_expired=args.all)
            for s in active:
                print(f"{s.id}  until {rfc3339(s.ends_at_ns)}  {s.matchers}  by {s.created_by}: {s.comment}")
            if not active:
                print("no active silences")
        return 0
    finally:
        store.close()
