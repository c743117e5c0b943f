"""Settings, loaded from the environment in one place.

Every knob has a unit in its name and a default that works on a laptop; ``Settings.from_env``
is the only function that reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Mapping

from roost.errors import InvalidInput
from roost.runtime.destinations import Policy
from roost.runtime.links import check_mail_settings, link_templates
from roost.runtime.schedule import Schedule
from roost.runtime.secrets import parse_console_tokens, parse_secret_keys, parse_service_tokens

SECONDS = 1.0
KIB = 1024


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./roost.db"
    # Bearer tokens for the admin and app APIs: ROOST_SERVICE_TOKENS="app:<token>,ops:<token>" names each one
    # (so one can be rotated while the others keep working); ROOST_SERVICE_TOKEN is one token named "default".
    # Each at least MIN_SERVICE_TOKEN_CHARS long. Read them through ``service_tokens_by_name``.
    service_token: str | None = field(default=None, repr=False)
    service_tokens: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    grace_period_s: float = 25 * SECONDS
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    migrate_on_start: bool = True

    max_body_bytes: int = 1024 * KIB
    ws_max_frame_bytes: int = 64 * KIB
    ws_hello_timeout_s: float = 5 * SECONDS
    ws_ping_interval_s: float = 20 * SECONDS
    ws_outgoing_buffer: int = 256

    restart_initial_backoff_s: float = 0.5 * SECONDS
    restart_max_backoff_s: float = 60 * SECONDS
    restart_budget: int = 10
    restart_window_s: float = 600 * SECONDS

    pg_pool_size: int = 10
    sqlite_readers: int = 4
    audit_retention_days: int = 365
    prune_interval_s: float = 3600 * SECONDS

    # Session pipeline: transcripts live at <session_dir>/<user>/*.jsonl; a processor is "late" when its last
    # successful run is older than its interval plus this grace. Per-processor intervals come from
    # ROOST_PROCESSOR_<NAME>_INTERVAL (seconds), or cron expressions from ROOST_PROCESSOR_<NAME>_CRON
    # (UTC unless prefixed "CRON_TZ=<zone> "; see roost.runtime.schedule).
    session_dir: str = "./sessions"
    processor_grace_s: float = 300 * SECONDS
    processor_intervals_s: Mapping[str, float] = field(default_factory=dict, hash=False)
    processor_crons: Mapping[str, str] = field(default_factory=dict, hash=False)

    stall_monitor: bool = False
    stall_warn_s: float = 0.05

    # Keys that seal scout secrets and sign unsubscribe links: ROOST_SECRET_KEYS="<new>,<old>" (the first
    # seals and signs, every one opens and verifies), or ROOST_SECRET_KEY as a list of one. Read them
    # through ``sealing_keys``; see roost.storage.scout_config for the minimum strength and derivation.
    secret_key: str | None = field(default=None, repr=False)
    secret_keys: str | None = field(default=None, repr=False)

    # Notifications, digests and e-mail (issue 6).
    digest_tick_seconds: float = 60 * SECONDS
    digest_batch_size: int = 1000
    digest_lookback_days: int = 30
    watch_decay_days: int = 90
    mail_transport: str = "auto"  # auto (smtp when smtp_url is set, else console) | smtp | file | console | plugin
    smtp_url: str | None = field(default=None, repr=False)
    smtp_timeout_s: float = 30 * SECONDS
    mail_dir: str = "./mail-out"
    mail_from: str = "roost <roost@localhost>"
    mail_max_attempts: int = 8
    mail_retry_initial_s: float = 30 * SECONDS
    mail_retry_max_s: float = 3600 * SECONDS
    mail_sending_lease_s: float = 600 * SECONDS
    public_url: str = "http://127.0.0.1:8000"  # roost's own URL: the unsubscribe link only
    templates_dir: str | None = None
    # Mails' links into the app (ROOST_APP_URL, ROOST_LINK_<PAGE> by page) and event-kind labels (JSON).
    app_url: str | None = None
    link_templates: Mapping[str, str] = field(default_factory=dict, hash=False)
    event_labels: str | None = None

    # Handoffs and live fan-out (issue 7).
    handoff_event_retention_s: float = 24 * 3600 * SECONDS  # replayable window for register {since}
    handoff_poll_s: float = 30 * SECONDS  # fan-out's safety read of the accounts' counters (the bus wakes it)
    handoff_assessor: str = "none"  # none | openai | a roost.assessors entry point
    handoff_assessor_timeout_s: float = 20 * SECONDS
    # A claimed assessment is leased: when its process dies mid-assessment the row stays 'running'
    # and is assessed again once the lease has run out (longer than the timeout, so a live one is
    # never taken over); after this many claims it is marked failed.
    handoff_assessment_lease_s: float = 120 * SECONDS
    handoff_assessment_max_attempts: int = 3

    # Dispatch (issue 8): how long a device has to report a send before it is offered again, and
    # how many unanswered send_requests one device may hold (kept under ws_outgoing_buffer).
    dispatch_lease_s: float = 300 * SECONDS
    dispatch_window: int = 100
    # A send_request the device never answers is offered at most this many times (each offer one
    # lease long); when the last lease runs out the item is failed with reason 'no_result'.
    dispatch_max_offers: int = 5

    # Scale-out (issue 9): the process table's heartbeat (also the leadership retry tick), and the
    # bus relay's safety sweep on PostgreSQL (a catch-up read for a wake-up lost to a producer
    # killed between its commit and its NOTIFY).
    heartbeat_s: float = 5 * SECONDS
    bus_sweep_s: float = 30 * SECONDS

    # Destinations (issue 17): hosts, addresses and CIDR ranges, comma-separated, that scouts' IMAP
    # servers and classifier URLs may reach although they are loopback/private/link-local/CGNAT
    # (self-hosted mail and LLM servers). Empty: only public addresses (roost.runtime.destinations).
    allowed_destinations: str = ""

    # Webhooks (issue 19, roost.actors.webhooks): each attempt's time limit; how many endpoints are
    # sent to at once; a delivery's retries (exponential, jittered, from initial to max) go on for
    # at least retry_window, then it is given up; an endpoint failing that long is disabled; a claim's
    # lease (longer than the timeout); how long a rotated-out secret still signs; and how long
    # delivered and given-up deliveries are kept.
    webhook_timeout_s: float = 10 * SECONDS
    webhook_concurrency: int = 16
    webhook_retry_initial_s: float = 5 * SECONDS
    webhook_retry_max_s: float = 3600 * SECONDS
    webhook_retry_window_s: float = 24 * 3600 * SECONDS
    webhook_disable_after_s: float = 3 * 24 * 3600 * SECONDS
    webhook_lease_s: float = 60 * SECONDS
    webhook_rotation_overlap_s: float = 24 * 3600 * SECONDS
    webhook_retention_days: int = 30

    # Operator console (issue 20, roost.http.console): ROOST_CONSOLE_TOKENS="name:role:token,..." where role is
    # ``read`` (sees everything, bodies on request, no actions) or ``operate``; each token at least 32 characters.
    # No tokens: the console answers 503. A sign-in lasts console_session_s; more than console_login_failures
    # failed sign-ins from one address within console_login_window_s are refused (429) until the window passes.
    # console_live_clients caps this process's open live streams (SSE).
    console_tokens: str | None = field(default=None, repr=False)
    console_session_s: float = 8 * 3600 * SECONDS
    console_login_failures: int = 5
    console_login_window_s: float = 300 * SECONDS
    console_live_clients: int = 500

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``ROOST_*`` variables (and ``PORT``, as a PaaS sets it).

        An empty variable counts as unset. ``overrides`` (command-line flags) win over the
        environment and are checked the same way.

        Raises:
            InvalidInput: a variable is set to something its type cannot hold, or to a value
                out of range (a negative or non-finite duration, a port over 65535, an unknown
                log format or level).
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"ROOST_{f.name.upper()}")
            if f.name == "port" and not raw:
                raw = env.get("PORT")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        intervals = _processor_intervals(env)
        if intervals:
            values["processor_intervals_s"] = intervals
        crons = _processor_crons(env)
        if crons:
            values["processor_crons"] = crons
        if link_templates(env):
            values["link_templates"] = link_templates(env)
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        _check(settings)
        return settings

    def __post_init__(self) -> None:
        # Checked on every construction (not only from_env) so no path starts with a weak token or key.
        self.service_tokens_by_name  # noqa: B018  (raises InvalidInput)
        self.sealing_keys  # noqa: B018
        self.console_tokens_by_name  # noqa: B018

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @cached_property  # read on every authenticated request: parsed once (frozen fields cannot change)
    def service_tokens_by_name(self) -> dict[str, str]:
        """Every configured service token by its name (``default`` for ROOST_SERVICE_TOKEN).

        Raises:
            InvalidInput: a malformed entry, a duplicate name or token, or a token under the minimum length.
        """
        return parse_service_tokens(self.service_token, self.service_tokens)

    @cached_property
    def sealing_keys(self) -> tuple[str, ...]:
        """The secret keys, first (sealing, signing) first; empty when none is set.

        Raises:
            InvalidInput: both variables set, an empty entry, or a key under the minimum strength.
        """
        return parse_secret_keys(self.secret_key, self.secret_keys)

    @cached_property
    def console_tokens_by_name(self) -> dict[str, tuple[str, str]]:
        """The operator console's tokens: ``{name: (role, token)}``, role ``read`` or ``operate``.

        Raises:
            InvalidInput: a malformed entry, an unknown role, a duplicate name or token, a short token.
        """
        return parse_console_tokens(self.console_tokens)


_POSITIVE = frozenset({
    "ws_ping_interval_s", "prune_interval_s", "restart_window_s", "ws_outgoing_buffer",
    "max_body_bytes", "ws_max_frame_bytes", "pg_pool_size", "sqlite_readers",
    "digest_tick_seconds", "digest_batch_size", "digest_lookback_days", "watch_decay_days", "mail_max_attempts",
    "handoff_event_retention_s", "handoff_poll_s", "handoff_assessor_timeout_s",
    "dispatch_lease_s", "dispatch_window", "heartbeat_s", "bus_sweep_s",
    "handoff_assessment_lease_s", "handoff_assessment_max_attempts", "dispatch_max_offers",
    "webhook_timeout_s", "webhook_concurrency", "webhook_retry_initial_s", "webhook_retry_max_s",
    "webhook_lease_s", "webhook_retention_days",
    "console_session_s", "console_login_failures", "console_login_window_s", "console_live_clients",
})
_LOG_FORMATS = frozenset({"auto", "json", "console"})
_LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


def _parse(name: str, raw: str, type_name: object) -> object:
    # With ``from __future__ import annotations`` a field's type is its source text ("int").
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise InvalidInput(f"ROOST_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


_PROCESSOR_INTERVAL = re.compile(r"^ROOST_PROCESSOR_([A-Z0-9_]+)_INTERVAL$")


def _processor_intervals(env: Mapping[str, str]) -> dict[str, float]:
    """``ROOST_PROCESSOR_<NAME>_INTERVAL=<seconds>`` for each session processor, keyed by lower-case name.

    Raises:
        InvalidInput: a value that is not a positive, finite number of seconds.
    """
    found: dict[str, float] = {}
    for key, raw in env.items():
        match = _PROCESSOR_INTERVAL.match(key)
        if not match or raw == "":
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput(f"{key}={raw!r} must be a positive number of seconds")
        found[match[1].lower()] = value
    return found


_PROCESSOR_CRON = re.compile(r"^ROOST_PROCESSOR_([A-Z0-9_]+)_CRON$")


def _processor_crons(env: Mapping[str, str]) -> dict[str, str]:
    """``ROOST_PROCESSOR_<NAME>_CRON=<cron expression>`` for each session processor, keyed by lower-case name.

    Raises:
        InvalidInput: an expression croniter cannot read (naming the variable and why).
    """
    found: dict[str, str] = {}
    for key, raw in env.items():
        match = _PROCESSOR_CRON.match(key)
        if not match or raw == "":
            continue
        try:
            found[match[1].lower()] = Schedule.cron(raw).cron_expr or raw
        except InvalidInput as exc:
            raise InvalidInput(f"{key}: {exc.message}") from exc
    return found


def _check(settings: Settings) -> None:
    """Reject values of the right type but out of range.

    Raises:
        InvalidInput: naming the variable and the value.
    """

    def bad(name: str, why: str) -> InvalidInput:
        return InvalidInput(f"ROOST_{name.upper()}={getattr(settings, name)!r} {why}")

    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise bad(f.name, "is not a finite number")
        if value < 0 or (value == 0 and f.name in _POSITIVE):
            raise bad(f.name, "must be positive" if f.name in _POSITIVE else "must not be negative")
    both = sorted(set(settings.processor_intervals_s) & set(settings.processor_crons))
    if both:
        raise InvalidInput(f"ROOST_PROCESSOR_{both[0].upper()}_INTERVAL and ROOST_PROCESSOR_{both[0].upper()}_CRON "
                           "are both set; set one")
    if settings.port > 65535:
        raise bad("port", "is not a TCP port (0-65535)")
    if settings.restart_initial_backoff_s > settings.restart_max_backoff_s:
        raise bad("restart_initial_backoff_s", "is over ROOST_RESTART_MAX_BACKOFF_S")
    if settings.handoff_assessment_lease_s <= settings.handoff_assessor_timeout_s:
        raise bad("handoff_assessment_lease_s", "must be longer than ROOST_HANDOFF_ASSESSOR_TIMEOUT_S")
    if settings.webhook_lease_s <= settings.webhook_timeout_s:
        raise bad("webhook_lease_s", "must be longer than ROOST_WEBHOOK_TIMEOUT_S")
    if settings.log_format not in _LOG_FORMATS:
        raise bad("log_format", f"is not one of {', '.join(sorted(_LOG_FORMATS))}")
    if settings.log_level.lower() not in _LOG_LEVELS:
        raise bad("log_level", f"is not one of {', '.join(sorted(_LOG_LEVELS))}")
    check_mail_settings(settings)  # names the ROOST_LINK_* / ROOST_APP_URL / ROOST_EVENT_LABELS at fault
    if settings.allowed_destinations.strip():
        try:
            destination_policy(settings)
        except ValueError as exc:
            raise bad("allowed_destinations", f"has an empty entry ({exc})") from exc


def destination_policy(settings: Settings) -> Policy:
    """The destinations policy ``settings.allowed_destinations`` describes (ValueError for an empty entry)."""
    raw = settings.allowed_destinations.strip()
    return Policy.parse(raw.split(",")) if raw else Policy()
