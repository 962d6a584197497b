"""otel-ai check: the seed's verification checklist, for this deployment."""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from otel_ai.config import ConfigError, load_settings

OK, WARN, FAIL = "✅", "⚠️ ", "❌"


def run_check(args) -> int:
    failures = 0
    out = sys.stdout

    def line(mark: str, text: str) -> None:
        nonlocal failures
        failures += mark == FAIL
        print(f"{mark} {text}", file=out)

    print("Configuration", file=out)
    env_file = Path.cwd() / ".env"
    if env_file.exists():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)
        line(OK, f".env loaded from {env_file}")
    try:
        settings = load_settings(args.config)
        line(OK, f"config valid ({args.config or 'embedded defaults'}); mode={settings.mode}")
    except ConfigError as exc:
        line(FAIL, str(exc))
        return 1
    line(OK if settings.enabled else WARN, f"AI events {'enabled' if settings.enabled else 'DISABLED (AI_EVENTS_ENABLED=false)'}")
    line(OK, f"minimum confidence {settings.min_confidence:.2f}; budget ${settings.budget.max_cost_per_day:.2f}/day")
    print("\nClaude analysis", file=out)
    for mark, text in _claude_checks(settings, Path(args.data_dir)):
        line(mark, text)
    print("\nNotifications", file=out)
    for mark, text in _notifier_checks(settings, Path(args.data_dir)):
        line(mark, text)

    print("\nEvent detection", file=out)
    for mark, text in _detector_checks(settings):
        line(mark, text)
    line(*_pipeline_self_test(settings))
    line(*_decoder_check())

    print("\nTelemetry a running otel-ai receives", file=out)
    for mark, text in _telemetry_checks(args):
        line(mark, text)

    print("\nStorage and ports", file=out)
    data_dir = Path(args.data_dir)
    try:
        from otel_ai.store import IncidentStore

        store = IncidentStore(data_dir / "incidents.db")
        line(OK, f"incident store {data_dir / 'incidents.db'}: {store.count()} incidents, {store.count('open')} open")
        store.close()
    except Exception as exc:  # any store failure is the finding itself
        line(FAIL, f"incident store at {data_dir}: {exc}")
    r = settings.receiver
    for name, port in (("OTLP/gRPC", r.grpc_port), ("OTLP/HTTP", r.http_port), ("admin", settings.admin.port)):
        line(*_port_free(name, r.host if name != "admin" else settings.admin.host, port))
    print(f"\n{'All checks passed' if not failures else f'{failures} check(s) failed'}", file=out)
    return 1 if failures else 0


def _claude_checks(settings, data_dir: Path) -> list[tuple[str, str]]:
    """The key, verified with one free call per configured model, and today's spend."""
    import anthropic

    from otel_ai.analysis.budget import DAY_NS

    results = []
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    models = sorted(set(settings.analysis.models.model_dump().values()))
    if not key:
        results.append((WARN, "ANTHROPIC_API_KEY not set: incidents get the offline analysis"))
    else:
        client = anthropic.Anthropic(api_key=key, max_retries=1, timeout=10.0)
        for model in models:
            try:
                client.models.retrieve(model)
                results.append((OK, f"API key accepted; model {model} available ({client.base_url})"))
            except anthropic.AuthenticationError:
                results.append((FAIL, f"ANTHROPIC_API_KEY was rejected by {client.base_url} (401)"))
                break
            except anthropic.NotFoundError:
                results.append((FAIL, f"model {model} is not available to this key; set analysis.models"))
            except anthropic.APIError as exc:
                results.append((WARN, f"could not verify the key at {client.base_url}: {type(exc).__name__}: {exc}"))
                break
        client.close()
    try:
        from anthropic._data import DEPRECATED_MODELS  # the SDK's own list; private, so optional
    except ImportError:  # pragma: no cover - an SDK that moved it
        DEPRECATED_MODELS = {}
    for model in models:
        if model in DEPRECATED_MODELS:
            results.append((WARN, f"model {model} is deprecated (end of life {DEPRECATED_MODELS[model]})"))
    results += _cost_estimates(settings)
    budget = settings.budget
    db = data_dir / "incidents.db"
    spent, calls = 0.0, 0
    if db.exists():
        from otel_ai.store import IncidentStore

        store = IncidentStore(db)
        now = time.time_ns()
        spent, calls = store.ai_spend_since(now - now % DAY_NS)
        store.close()
    share = spent / budget.max_cost_per_day if budget.max_cost_per_day else 1.0
    results.append((OK if share < 0.8 else WARN,
                    f"budget used today: ${spent:.4f} of ${budget.max_cost_per_day:.2f} ({share:.0%}) in {calls} "
                    f"call(s); at most {budget.max_analyses_per_hour} analyses/hour"))
    return results


def _notifier_checks(settings, data_dir: Path) -> list[tuple[str, str]]:
    """The mode, each notifier's state (a warning when one is configured but nothing will be
    sent), Slack's token verified with auth.test, and the outbox."""
    from otel_ai.app import Credentials, build_notifiers

    creds = Credentials.from_env()
    _, states = build_notifiers(settings, creds)
    results = []
    if settings.mode == "shadow":
        results.append((WARN, "AI_MODE=shadow: incidents are analyzed and recorded, nothing will be sent to anyone"))
    else:
        results.append((OK, f"mode {settings.mode}: notifiers that are on get incidents at or above minConfidence "
                            f"{settings.min_confidence:g}"))
    for state in states:
        if state.sending:
            results.append((OK, state.line()))
        elif state.configured:
            results.append((WARN, f"{state.name} is configured but nothing will be sent: {state.why}"))
        else:
            results.append((OK, state.line()))
    unknown = sorted({n for route in settings.notify.routes for n in route.notifiers} - {s.name for s in states})
    if unknown:
        results.append((WARN, f"notify.routes name unknown notifier(s) {unknown}: nothing is sent to them"))
    if not any(state.configured for state in states):
        results.append((WARN, "no notifier configured: incidents reach only the console, JSONL, the store and the "
                              "admin API (set SLACK_BOT_TOKEN, PAGERDUTY_ROUTING_KEY or AI_WEBHOOK_URL)"))
    if creds.slack_bot_token:
        results += _slack_checks(settings, creds)
    db = data_dir / "incidents.db"
    if db.exists():
        from otel_ai.notify.outbox import Outbox
        from otel_ai.store import IncidentStore

        store = IncidentStore(db)
        counts = Outbox(store).counts()
        store.close()
        dead = counts.get("dead", 0)
        results.append((WARN if dead else OK, f"outbox: {counts.get('pending', 0)} pending, {dead} undeliverable"))
    return results


def _slack_checks(settings, creds) -> list[tuple[str, str]]:
    """Token verified with auth.test, channels and signing secret present."""
    from slack_sdk.errors import SlackApiError, SlackClientError

    from otel_ai.notifiers.slack import make_client

    results = []
    client = make_client(creds.slack_bot_token, creds.slack_api_url)
    try:
        who = client.auth_test()
        results.append((OK, f"Slack token accepted: bot {who.get('user')} in team {who.get('team')} ({client.base_url})"))
    except SlackApiError as exc:
        results.append((FAIL, f"Slack refused the token: {exc.response.get('error')}"))
    except (SlackClientError, OSError) as exc:
        results.append((WARN, f"could not reach Slack at {client.base_url}: {exc}"))
    rules = settings.slack
    missing = [s for s in ("critical", "warning", "info") if not rules.channel_for(s)]
    results.append((FAIL, f"no Slack channel for {', '.join(missing)} incidents: set SLACK_INCIDENT_CHANNEL") if missing
                   else (OK, "channels: " + ", ".join(f"{s} → {rules.channel_for(s)}" for s in ("critical", "warning", "info"))))
    results.append((OK, "SLACK_SIGNING_SECRET set: the Acknowledge button works (POST /slack/actions)")
                   if creds.slack_signing_secret
                   else (WARN, "SLACK_SIGNING_SECRET not set: the Acknowledge button is refused"))
    return results


def _detector_checks(settings) -> list[tuple[str, str]]:
    """The detectors that really run, each with what it watches; disabled rules as warnings."""
    from otel_ai.detectors import BUILT_IN, build_detectors

    if not settings.enabled:
        return [(WARN, "no detector runs: AI events are disabled")]
    results = []
    for detector in build_detectors(settings):
        cls = type(detector)
        origin = "" if cls is BUILT_IN.get(detector.event_type) else f" [{cls.__module__}:{cls.__name__}]"
        results.append((OK, f"{detector.event_type}{origin}: {detector.describe()}"))
    results += [(WARN, f"{name}: disabled") for name, rule in settings.events.items() if not rule.enabled]
    return results


def _cost_estimates(settings) -> list[tuple[str, str]]:
    """What one analysis of a typical incident costs on the configured models."""
    from otel_ai.analysis.prompts import PromptLibrary
    from otel_ai.testing.factory import IncidentFactory

    library = PromptLibrary(settings.analysis)
    results = []
    for event_type in ("ERROR_RATE_SPIKE", "LATENCY_ANOMALY"):
        prompt = library.build_prompt(IncidentFactory.create_sample(event_type))
        mark = OK if prompt.typical_usd <= 0.02 else WARN
        results.append((mark, f"typical {event_type} analysis on {prompt.model}: about ${prompt.typical_usd:.4f} "
                              f"(at most ${prompt.worst_case_usd:.4f}, reserved from the budget before the call)"))
    return results


def _telemetry_checks(args) -> list[tuple[str, str]]:
    """Asks a running server (--admin-url, or the one recorded in the data dir) what it
    makes of its traffic: tail-sampled traces, routes counted from metrics, instances
    nearing a CPU or memory limit."""
    import json
    import urllib.error
    import urllib.request

    from otel_ai import server_record

    url = args.admin_url or server_record.running_admin_url(args.data_dir)
    if url is None:
        return [(OK, f"no running otel-ai recorded in {args.data_dir} (or --admin-url): start `otel-ai serve`, then "
                     "check again to see tail sampling, metrics and saturation in the traffic it gets")]
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/telemetry", timeout=5) as response:
            report = json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        return [(WARN, f"could not ask the running otel-ai at {url}: {exc}")]
    if not report.get("metrics"):
        return [(OK, f"otel-ai at {url} has not judged a minute of traffic yet")]
    results = []
    for found in report["tail_sampling"]:
        metric_share = found["metric_error_share"]
        compared = "" if metric_share is None else f" while {metric_share:.1%} of its requests do (metrics)"
        results.append((WARN, f"traces of {found['label']} ({found['service']}) look tail-sampled: "
                              f"{found['why']}; {found['span_error_share']:.1%} of its spans fail{compared}. Error "
                              "rates from these traces come out too high: give otel-ai a traces pipeline that "
                              "branches before the tail_sampling processor (docs/metrics.md)"))
    if not report["tail_sampling"]:
        results.append((OK, "no sign of tail-sampled traces"))
    metrics = report["metrics"]
    counted = metrics["subjects_counted_from_metrics"]
    results.append((OK, f"{counted} routes and dependencies counted from request-duration metrics "
                        f"({metrics['streams']} cumulative streams); their spans give suspects and exemplars"
                        if counted else "no request-duration metrics: counts come from spans"))
    for found in report["saturation"]:
        eta = found["seconds_to_saturation"]
        if eta is not None:
            results.append((WARN, f"{found['service']} {found['instance']}: {found['resource']} at "
                                  f"{found['utilization']:.0%} of its limit ({found['source']}), saturating in "
                                  f"about {eta / 60:.0f} min at this trend"))
    return results


def _port_free(name: str, host: str, port: int) -> tuple[str, str]:
    if port == 0:
        return OK, f"{name}: a free port will be picked"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return WARN, f"{name} port {host}:{port} is in use ({exc.strerror}); is otel-ai already running?"
    return OK, f"{name} port {host}:{port} is free"


def _decoder_check() -> tuple[str, str]:
    """Which OTLP decoder serves requests: the native one, or the slower Python fallback."""
    from otel_ai.decode import decoder

    return (OK if decoder.native_wanted() else WARN), f"OTLP decoder: {decoder.describe()}"


def _pipeline_self_test(settings) -> tuple[str, str]:
    """Decode one synthetic error spike through a throwaway pipeline."""
    from otel_ai.pipeline import Pipeline
    from otel_ai.store import IncidentStore
    from otel_ai.testing.harness import RecordingExporter
    from otel_ai.testing.scenarios import scenario

    with tempfile.TemporaryDirectory() as tmp:
        recorder = RecordingExporter()
        store = IncidentStore(Path(tmp) / "check.db")
        pipeline = Pipeline(settings, store, [recorder], use_wall_clock=False)
        started = time.monotonic()
        generator = scenario("dependency_down", seed=5, warmup_s=360)
        for body in generator.serialized_batches(420):
            pipeline.feed(body)
        pipeline.flush()
        pipeline.stop()
        store.close()
    took = time.monotonic() - started
    if recorder.opened():
        first = recorder.opened()[0]
        return OK, f"self-test: injected fault detected as {first.type} ({first.summary}) in {took:.1f}s"
    return FAIL, "self-test: an injected dependency outage was NOT detected"
