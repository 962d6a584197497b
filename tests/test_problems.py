"""Problems on their own: the book's episodes (join, dip and return within the cool-down,
a new problem after it, reopen), the root as suspect #1, the store's problems (schema v6),
the API and the CLI, and the policy paging once per problem."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from otel_ai.admin import AdminServer
from otel_ai.config import load_settings
from otel_ai.graph.root_cause import with_root_first
from otel_ai.model import DEPENDENCY, ROUTE, Subject
from otel_ai.notify.outbox import Outbox
from otel_ai.notify.policy import NotificationPolicy
from otel_ai.notify.silences import Silences
from otel_ai.problems import ProblemBook, root_key
from otel_ai.selfmetrics import SelfMetrics
from otel_ai.store import SCHEMA_VERSION, IncidentStore
from otel_ai.testing.factory import IncidentFactory
from otel_ai.testing.harness import RecordingNotifier

S = 10**9
NOW = 1_790_000_000 * S
COOLDOWN = 600 * S
NETWORK = {"kind": "network", "service": "timetable-service", "pod": None, "version": None, "dependency": None,
           "operation": "timetable-service GET /timetable", "score": 0.98, "evidence": [
               {"component": "web-gateway GET /api/search", "metric": "latency_ms", "baseline": 80.0, "now": 290.0,
                "calls_per_request": 1.0},
               {"component": "route-planner → timetable-service (network)", "metric": "overhead_ms", "baseline": 2.0,
                "now": 202.0, "calls_per_request": 1.0}]}
DB = {"kind": "dependency", "service": "config-service", "dependency": "config-db", "score": 1.0, "evidence": []}


def member(n: int, root=NETWORK, **fields):
    subject = Subject(ROUTE, f"svc-{n}", "GET", f"/r{n}")
    fields.setdefault("opened_at_ns", NOW)
    return IncidentFactory.create("LATENCY_ANOMALY", id=f"inc_{n}", subject=subject, root_cause=root, **fields)


def test_incidents_with_one_root_share_a_problem_and_other_roots_do_not():
    book = ProblemBook(COOLDOWN)
    a, b, c = member(1), member(2), member(3, root=DB)
    a.problem_id = book.join(a, NOW)
    b.problem_id = book.join(b, NOW + S)
    c.problem_id = book.join(c, NOW + S)
    assert a.problem_id == b.problem_id != c.problem_id
    assert a.problem_id.startswith("prb_") and book.open_problems() == 2
    assert book.join(member(4, root=None), NOW) is None  # no root: no problem
    # Pods or versions of one service narrow the same root.
    assert root_key({"kind": "pod", "service": "x", "pod": "x-1"}) == root_key({"kind": "service", "service": "x"})


def test_a_cascade_that_dips_and_returns_within_the_cooldown_stays_one_episode():
    book = ProblemBook(COOLDOWN)
    a = member(1)
    a.problem_id = book.join(a, NOW)
    book.leave(a, NOW + 60 * S)  # its last member resolved
    assert book.open_problems() == 0
    b = member(2)
    b.problem_id = book.join(b, NOW + 60 * S + COOLDOWN - S)
    assert b.problem_id == a.problem_id  # back within the cool-down
    book.leave(b, NOW + 120 * S)
    c = member(3)
    assert book.join(c, NOW + 120 * S + COOLDOWN + S) != a.problem_id  # later: a new problem
    # A reopened incident goes back into its own problem, whatever its age.
    assert book.join(a, NOW + 3 * COOLDOWN) == a.problem_id


def test_the_book_is_bounded():
    book = ProblemBook(COOLDOWN, limit=10)
    for n in range(50):
        incident = member(n, root={"kind": "service", "service": f"s{n}"})
        book.join(incident, NOW + n)
    assert len(book.by_id) == 10 and len(book.by_root) == 10


def test_the_root_is_suspect_one_merged_with_the_same_pair():
    route = Subject(ROUTE, "search-service", "GET", "/search")
    found = [{"key": "tenant.id", "value": "acme", "score": 0.2, "bad_share": 0.4, "good_share": 0.2},
             {"key": "dependency.failed", "value": "config-db", "score": 0.6, "bad_share": 0.6, "good_share": 0.0}]
    ranked = with_root_first(found, DB, "slow", route)
    # The same dependency under the other key stands for the root, with its shares.
    assert [(s["key"], s["value"]) for s in ranked] == [("dependency.failed", "config-db"), ("tenant.id", "acme")]
    assert ranked[0]["source"] == "root_cause" and ranked[0]["bad_share"] == 0.6
    ranked = with_root_first(found[:1], NETWORK, "slow", route)
    assert (ranked[0]["key"], ranked[0]["value"]) == ("network.inbound", "timetable-service")
    # In the route's own service a strong suspect (a tenant, a version) says more: it stays first.
    own = Subject(ROUTE, "checkout", "POST", "/pay")
    tenant = [{"key": "tenant.id", "value": "initech", "score": 0.9, "bad_share": 0.9, "good_share": 0.0}]
    assert with_root_first(tenant, {"kind": "service", "service": "checkout"}, "error", own) == tenant
    dependency = Subject(DEPENDENCY, "checkout", "", "checkout")
    assert with_root_first(tenant, {"kind": "service", "service": "checkout"}, "error", dependency)[0]["key"] == \
        "service.name"


def test_store_keeps_problems_with_their_members(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    assert store.schema_version() == SCHEMA_VERSION == 6
    a, b = member(1, problem_id="prb_1"), member(2, problem_id="prb_1", status="resolved", resolved_at_ns=NOW + S)
    store.save(a)
    store.save(b)
    store.save(member(3))  # no problem
    problem = store.problem("prb_1")
    assert problem.root_key == "network:timetable-service" and problem.status == "open"
    assert [m.id for m in problem.members] == ["inc_1", "inc_2"]
    snapshot = problem.snapshot()
    assert snapshot["root_cause"]["evidence"][1]["now"] == 202.0
    assert [m["route"] for m in snapshot["members"]] == ["/r1", "/r2"]
    assert [p.id for p in store.problems(status="open")] == ["prb_1"] and store.problems(status="resolved") == []
    store.save(member(1, problem_id="prb_1", status="resolved", resolved_at_ns=NOW + 2 * S, version=2))
    assert store.problem("prb_1").status == "resolved" and store.count_problems("resolved") == 1
    store.close()


def test_api_and_cli_show_problems(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    store.save(member(1, problem_id="prb_1"))
    store.save(member(2, problem_id="prb_1"))
    admin = AdminServer(store, SelfMetrics(), host="127.0.0.1", port=0)
    port = admin.start()
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/api/problems?status=open", timeout=5) as response:
            listing = json.load(response)
        assert listing["total"] == 1 and listing["problems"][0]["id"] == "prb_1"
        assert len(listing["problems"][0]["members"]) == 2
        with opener.open(f"http://127.0.0.1:{port}/api/problems/prb_1", timeout=5) as response:
            assert json.load(response)["root_cause"]["kind"] == "network"
        try:
            opener.open(f"http://127.0.0.1:{port}/api/problems/prb_nope", timeout=5)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        admin.stop()
        store.close()
    cli = [sys.executable, "-m", "otel_ai", "problems"]
    listed = subprocess.run([*cli, "list", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "prb_1" in listed.stdout and "network into timetable-service" in listed.stdout
    shown = subprocess.run([*cli, "show", "prb_1", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "overhead_ms 2.0 -> 202.0" in shown.stdout and "svc-2" in shown.stdout
    missing = subprocess.run([*cli, "show", "prb_nope", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "unknown problem" in missing.stderr


def test_a_later_incident_with_the_same_root_joins_the_problem_instead_of_paging(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    pager = RecordingNotifier("pager")
    policy = NotificationPolicy(load_settings(env={}), [pager], Outbox(store), Silences(store), store,
                                clock_ns=lambda: NOW)
    first = member(1, problem_id="prb_1", severity="critical")
    later = member(2, problem_id="prb_1", severity="critical", opened_at_ns=NOW + 30 * S)
    quiet = member(3, problem_id="prb_1", below_min_confidence=True)  # gated: listed, never leads
    for incident in (first, later, quiet):
        store.save(incident)
        policy.export(incident)
    outbox = Outbox(store)
    assert outbox.has_notification("pager", "prb_1")
    assert not any(outbox.has_notification("pager", i.id) for i in (first, later, quiet))
    due = outbox.next_due("pager", NOW + 3600 * S)
    messages = [e for e in due if e.kind == "message"]
    assert len(messages) == 1 and messages[0].incident_id == "prb_1"
    assert messages[0].payload["incident"]["id"] == "inc_1"
    assert [r["id"] for r in messages[0].payload["related"]] == ["inc_2", "inc_3"]
    store.close()


def test_the_incident_page_shows_the_root_and_its_chain():
    from otel_ai.page.render import incident_detail

    html = incident_detail(member(1, problem_id="prb_1"), None, ack_needs_token=False)
    section = html[html.index("<h2>Root cause</h2>"):html.index("<h2>Top errors</h2>")]
    assert "network into timetable-service" in section and "explains 98% of the change" in section
    assert "route-planner → timetable-service (network)" in section and "202.0" in section


def test_the_root_cause_leaves_the_process_redacted():
    from otel_ai.analysis.redact import Redactor, redact_incident

    secret = "jane.planted@example.com"
    root = {**NETWORK, "service": f"svc-{secret}",
            "evidence": [{"component": f"GET /users/{secret}", "metric": "latency_ms", "baseline": 1.0, "now": 9.0}]}
    out = redact_incident(Redactor(), member(1, root=root, problem_id="prb_1"))
    assert secret not in json.dumps(out.snapshot()) and out.root_cause["evidence"][0]["now"] == 9.0


def test_acknowledging_one_incident_of_a_problem_acknowledges_its_open_members(tmp_path):
    """One problem is one page, and each notifier may show a different member of it (its
    lead there is whoever led when group_wait ended): whoever took it owns all of it."""
    from otel_ai.incidents import IncidentManager

    store = IncidentStore(tmp_path / "incidents.db")
    changes = []
    manager = IncidentManager(load_settings(env={}), store, changes.append, SelfMetrics())
    lead, other = member(1, problem_id="prb_1"), member(2, problem_id="prb_1")
    elsewhere, done = member(3, problem_id="prb_2"), member(4, problem_id="prb_1", status="resolved")
    for incident in (lead, other, elsewhere, done):
        manager.active[(incident.subject, incident.type)] = incident
    assert manager.acknowledge("inc_1", "U7", NOW + S) is lead
    assert [(c.id, c.last_change, c.acknowledged_by) for c in changes] == [
        ("inc_1", "acknowledged", "U7"), ("inc_2", "acknowledged", "U7")]
    assert elsewhere.status == "open" and done.status == "resolved"
    assert manager.acknowledge("inc_2", "U8", NOW + 2 * S) is other and len(changes) == 2  # already taken
    store.close()
