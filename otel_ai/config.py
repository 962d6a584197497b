"""Configuration: embedded defaults < YAML file < environment.

Validated with pydantic so that a bad value fails at start-up with a message that
names the key (e.g. ``events.ERROR_RATE_SPIKE.window: not a duration: '5x'``).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator,
)

from otel_ai.timefmt import parse_duration


class ConfigError(Exception):
    """Raised with a human-readable message naming every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(value: Any) -> float:
    return parse_duration(value)


class EventRule(_Strict):
    """The seed's rule of one event type; a detector with more settings extends it (its `Rule`)."""

    enabled: bool = True
    threshold: float = Field(gt=0)
    window: float  # seconds
    min_samples: int = Field(alias="minSamples", ge=1)
    severity: Literal["info", "warning", "critical"]

    _parse_window = field_validator("window", mode="before")(_duration)

    @field_validator("severity", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # The seed writes EventSeverity.CRITICAL; YAML users write critical.
        return value.lower() if isinstance(value, str) else value


class Budget(_Strict):
    max_cost_per_day: float = Field(5.0, alias="maxCostPerDay", ge=0)
    max_analyses_per_hour: int = Field(20, alias="maxAnalysesPerHour", ge=0)
    alert_on_budget_exceeded: bool = Field(True, alias="alertOnBudgetExceeded")


class Receiver(_Strict):
    host: str = "0.0.0.0"
    grpc_port: int = Field(4317, alias="grpcPort", ge=0, le=65535)
    http_port: int = Field(4318, alias="httpPort", ge=0, le=65535)
    max_request_bytes: int = Field(64 * 1024 * 1024, alias="maxRequestBytes", ge=1024)
    queue_batches: int = Field(256, alias="queueBatches", ge=1)
    queue_spans: int = Field(500_000, alias="queueSpans", ge=1)
    bearer_token: str | None = Field(None, alias="bearerToken")
    tls_cert_file: str | None = Field(None, alias="tlsCertFile")
    tls_key_file: str | None = Field(None, alias="tlsKeyFile")


class Admin(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8888, ge=0, le=65535)
    # Needed for the admin routes that change state or spend money (e.g. POST
    # /api/incidents/{id}/analyze); without it they answer loopback clients only.
    token: str | None = None
    # How people reach this admin port (e.g. https://otel-ai.internal); when set, Slack's
    # "View Details" opens the incident page there unless slack.detailsUrl says otherwise.
    public_url: str | None = Field(None, alias="publicUrl")
    # The tracing UI's page for one trace, {trace_id} filled in: exemplar links on the page.
    trace_url: str | None = Field(None, alias="traceUrl")

    @field_validator("public_url", "trace_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value


class Windows(_Strict):
    slot: float = 10.0
    allowed_lateness: float = Field(5.0, alias="allowedLateness")
    wall_clock_advance: bool = Field(True, alias="wallClockAdvance")
    max_clock_skew: float = Field(600.0, alias="maxClockSkew")
    max_span_age: float = Field(3600.0, alias="maxSpanAge")
    baseline_snapshot: float = Field(60.0, alias="baselineSnapshot")

    _parse = field_validator("slot", "allowed_lateness", "max_clock_skew", "max_span_age", "baseline_snapshot",
                             mode="before")(_duration)

    @field_validator("slot")
    @classmethod
    def _slot_range(cls, value: float) -> float:
        if not 1.0 <= value <= 60.0:
            raise ValueError("slot must be between 1s and 60s")
        return value


class Limits(_Strict):
    max_routes_per_service: int = Field(2000, alias="maxRoutesPerService", ge=1)
    max_subjects: int = Field(20000, alias="maxSubjects", ge=16)


class Incidents(_Strict):
    recovery_period: float = Field(120.0, alias="recoveryPeriod")
    cooldown: float = 600.0
    stale_after: float = Field(900.0, alias="staleAfter")
    update_interval: float = Field(60.0, alias="updateInterval")

    _parse = field_validator("recovery_period", "cooldown", "stale_after", "update_interval", mode="before")(_duration)


class Price(_Strict):
    """USD per million tokens."""
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(alias="cacheWrite", ge=0)
    cache_read: float = Field(alias="cacheRead", ge=0)


class Models(_Strict):
    critical: str
    warning: str
    info: str


class Redaction(_Strict):
    max_value_chars: int = Field(256, alias="maxValueChars", ge=16, le=4096)
    deny_keys: list[str] = Field(default_factory=list, alias="denyKeys")
    allow_keys: list[str] = Field(default_factory=list, alias="allowKeys")


class Analysis(_Strict):
    models: Models
    effort: Literal["low", "medium", "high"] | None = "low"
    max_tokens: int = Field(2048, alias="maxTokens", ge=256, le=32000)
    request_timeout: float = Field(30.0, alias="requestTimeout")
    deadline: float = 90.0
    max_attempts: int = Field(4, alias="maxAttempts", ge=1, le=10)
    concurrency: int = Field(2, ge=1, le=16)
    queue_size: int = Field(200, alias="queueSize", ge=1)
    max_prompt_chars: int = Field(24000, alias="maxPromptChars", ge=2000)
    prices: dict[str, Price]
    redaction: Redaction = Redaction()

    _parse = field_validator("request_timeout", "deadline", mode="before")(_duration)

    @model_validator(mode="after")
    def _priced(self) -> "Analysis":
        for severity, model in self.models.model_dump().items():
            if model not in self.prices:
                raise ValueError(
                    f"models.{severity}: no price for {model!r}; add it under analysis.prices "
                    f"(known: {sorted(self.prices)})")
        return self


def _http_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


class Actions(_Strict):
    # Called only with mode "active"; see exporters/rollback_webhook.py for the safeguards.
    rollback_webhook: str | None = Field(None, alias="rollbackWebhook")
    min_confidence: float = Field(0.9, alias="minConfidence", ge=0, le=1)

    _url = field_validator("rollback_webhook")(_http_url)


class NotifierPolicy(_Strict):
    """The notification policy's timing, per notifier (as Alertmanager sets it per route)."""
    group_wait: float = Field(10.0, alias="groupWait")
    repeat_interval: float = Field(4 * 3600.0, alias="repeatInterval")  # 0: no reminders
    send_resolved: bool = Field(True, alias="sendResolved")
    details_url: str | None = Field(None, alias="detailsUrl")

    _parse = field_validator("group_wait", "repeat_interval", mode="before")(_duration)


class SlackChannels(_Strict):
    critical: str | None = None
    warning: str | None = None
    info: str | None = None


class Slack(NotifierPolicy):
    channel: str | None = None  # $SLACK_INCIDENT_CHANNEL
    channels: SlackChannels = SlackChannels()  # per severity, over `channel`

    def channel_for(self, severity: str) -> str | None:
        return getattr(self.channels, severity, None) or self.channel


class PagerDuty(NotifierPolicy):
    # PagerDuty escalates an unacknowledged incident itself; reminders would only add noise.
    repeat_interval: float = Field(0.0, alias="repeatInterval")
    events_url: str = Field("https://events.pagerduty.com/v2/enqueue", alias="eventsUrl")  # $PAGERDUTY_EVENTS_URL
    source: str = "otel-ai"
    timeout: float = 10.0

    _url = field_validator("events_url")(_http_url)
    _parse_timeout = field_validator("timeout", mode="before")(_duration)


class Webhook(NotifierPolicy):
    url: str | None = None  # $AI_WEBHOOK_URL; the HMAC secret comes from $AI_WEBHOOK_SECRET only
    timeout: float = 10.0

    _url = field_validator("url")(_http_url)
    _parse_timeout = field_validator("timeout", mode="before")(_duration)


ROUTE_MATCH_KEYS = ("severity", "service", "type", "route")


class Route(_Strict):
    """Alertmanager-style: the first route whose matchers all hold decides, unless it says continue."""
    match: dict[str, str | list[str]] = Field(default_factory=dict)
    notifiers: list[str]  # names of notifiers; `otel-ai check` warns about one that is not on
    continue_: bool = Field(False, alias="continue")

    @field_validator("match")
    @classmethod
    def _known_keys(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(ROUTE_MATCH_KEYS))
        if unknown:
            raise ValueError(f"unknown matcher(s) {unknown}; use {', '.join(ROUTE_MATCH_KEYS)}")
        return value


class Notify(_Strict):
    routes: list[Route] = Field(default_factory=list)  # none: every configured notifier gets every incident


class Settings(_Strict):
    enabled: bool = True
    min_confidence: float = Field(0.75, alias="minConfidence", ge=0, le=1)
    mode: Literal["shadow", "notify", "active"] = "notify"
    # Detectors from other packages, "package.module:ClassName"; declared before `events`,
    # whose rules are validated by each type's detector.
    detectors: list[str] = Field(default_factory=list)
    events: dict[str, EventRule]
    budget: Budget = Budget()
    receiver: Receiver = Receiver()
    admin: Admin = Admin()
    windows: Windows = Windows()
    limits: Limits = Limits()
    incidents: Incidents = Incidents()
    analysis: Analysis
    actions: Actions = Actions()
    slack: Slack = Slack()
    pagerduty: PagerDuty = PagerDuty()
    webhook: Webhook = Webhook()
    notify: Notify = Notify()

    def notifier_rules(self, name: str) -> NotifierPolicy:
        """A notifier's policy timing: its own config block, or the defaults for one without."""
        rules = getattr(self, name, None)
        return rules if isinstance(rules, NotifierPolicy) else NotifierPolicy()

    @model_validator(mode="after")
    def _details_on_the_incident_page(self) -> "Settings":
        # Every notifier's link (Slack's View Details, PagerDuty's link, the webhook's generatorURL).
        for rules in (self.slack, self.pagerduty, self.webhook):
            if rules.details_url is None and self.admin.public_url:
                rules.details_url = self.admin.public_url.rstrip("/") + "/incidents/{incident_id}"
        return self

    @field_validator("detectors")
    @classmethod
    def _loadable(cls, value: list[str]) -> list[str]:
        from otel_ai.detectors import load_plugin

        for spec in value:
            load_plugin(spec)
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _detected_types(cls, value: Any, info: ValidationInfo) -> Any:
        """Every type needs a detector, whose own Rule validates its settings."""
        if not isinstance(value, dict):
            return value
        from otel_ai.detectors import NOT_DETECTORS, detector_classes

        try:
            classes = detector_classes(info.data.get("detectors", ()))
        except ValueError:
            return value  # the detectors field reports it
        unknown = [name for name in value if name not in classes]
        if unknown:
            why = "; ".join(f"{name} is {NOT_DETECTORS[name]}" for name in unknown if name in NOT_DETECTORS)
            raise ValueError(f"no detector for event type(s) {unknown}{f' ({why})' if why else ''}; "
                             f"types with a detector: {list(classes)}; add your own with `detectors:`")
        rules = create_model("Events", __config__=ConfigDict(extra="forbid"),
                             **{name: (getattr(classes[name], "Rule", EventRule), ...) for name in value})
        parsed = rules.model_validate(value)
        return {name: getattr(parsed, name) for name in value}

    @model_validator(mode="after")
    def _plugins_have_rules(self) -> "Settings":
        from otel_ai.detectors import load_plugin

        for spec in self.detectors:
            event_type = load_plugin(spec).event_type
            if event_type not in self.events:
                raise ValueError(f"detectors: {spec} detects {event_type}, which has no rule under events "
                                 f"(add events.{event_type} with threshold, window, minSamples and severity)")
        return self


# Environment names from the seed, mapped onto config keys.
_ENV_KEYS = {
    "AI_EVENTS_ENABLED": ("enabled",),
    "AI_MIN_CONFIDENCE": ("minConfidence",),
    "AI_MAX_COST_PER_DAY": ("budget", "maxCostPerDay"),
    "AI_MODE": ("mode",),
    "OTEL_AI_ADMIN_TOKEN": ("admin", "token"),
    "OTEL_AI_PUBLIC_URL": ("admin", "publicUrl"),
    "OTEL_AI_TRACE_URL": ("admin", "traceUrl"),
    "SLACK_INCIDENT_CHANNEL": ("slack", "channel"),
    "PAGERDUTY_EVENTS_URL": ("pagerduty", "eventsUrl"),
    "AI_WEBHOOK_URL": ("webhook", "url"),
    "AI_MODEL_CRITICAL": ("analysis", "models", "critical"),
    "AI_MODEL_WARNING": ("analysis", "models", "warning"),
}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _defaults() -> dict:
    text = resources.files("otel_ai").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build Settings from defaults, an optional YAML file and the environment."""
    env = os.environ if env is None else env
    data = _defaults()
    source = "embedded defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = _merge(data, loaded)
    for name, keys in _ENV_KEYS.items():
        if name in env and env[name] != "":
            target = data
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = env[name]
            source += f" + ${name}"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
