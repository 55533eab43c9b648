"""Settings: ``configure()`` arguments, else ``CHIMEWAY_*`` environment variables, else defaults.

Every setting is declared once below, with the environment variable that names it, a parser and a
default. ``load_settings()`` validates everything up front, so a bad value fails at configure time
with a :class:`~chimeway.errors.ConfigurationError` naming the variable and what it accepts, never
later inside a worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from chimeway.errors import ConfigurationError

#: Where the embedded default keeps its database: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///chimeway.sqlite3"
#: CHIMEWAY_* variables with these prefixes are never settings: Chimeway's own test suite and
#: harnesses use them (CHIMEWAY_TEST_POSTGRES, CHIMEWAY_HARNESS_PG_BIN…), so they are not refused.
RESERVED_PREFIXES = ("CHIMEWAY_TEST_", "CHIMEWAY_HARNESS_")

_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def mask_url(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1***@", text)

#: The largest attempt budget a delivery may have, by setting or per send.
MAX_ATTEMPTS_LIMIT = 100

#: PostgreSQL's jsonb holds at most 2**28 - 1 bytes: a larger payload limit could never be stored.
_JSONB_MAX_BYTES = 268_435_455


def _int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError
        return number

    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    parse.accepts = f"a whole number {bounds}"  # type: ignore[attr-defined]
    return parse


def _database_url(value: Any) -> str:
    text = str(value)
    if not (text.startswith(("postgresql://", "postgres://", "sqlite:///")) or text == "sqlite://:memory:"):
        raise ValueError
    return text


_database_url.accepts = "postgresql://user@host:port/dbname or sqlite:///path/to/file.sqlite3"  # type: ignore[attr-defined]


def _redis_url(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError
    return text


_redis_url.accepts = "redis://host:port/db (or rediss://, unix://), or empty for the in-memory broker"  # type: ignore[attr-defined]


def _text(value: Any) -> str | None:
    text = str(value)
    return text or None


_text.accepts = "any text"  # type: ignore[attr-defined]


def _name(value: Any) -> str:
    text = str(value).strip()
    if not text or not text.replace("_", "").replace("-", "").isalnum():
        raise ValueError
    return text


_name.accepts = "a name of letters, digits, '-' and '_'"  # type: ignore[attr-defined]


def _mapping(value: Any) -> dict[str, str]:
    """``email=smtp,sms=twilio`` or a dict."""
    if isinstance(value, Mapping):
        return {_name(k): _name(v) for k, v in value.items()}
    result = {}
    for part in str(value).split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise ValueError
        result[_name(key)] = _name(val)
    return result


_mapping.accepts = "channel=adapter pairs separated by commas, e.g. email=smtp,sms=twilio"  # type: ignore[attr-defined]


def parse_flag(value: Any) -> bool:
    """A yes/no setting or adapter option: a bool, or true/false, 1/0, yes/no, on/off (empty: false)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


parse_flag.accepts = "true or false (also 1/0, yes/no, on/off)"  # type: ignore[attr-defined]


def _cron(value: Any) -> str:
    from croniter import croniter

    text = str(value).strip()
    if not croniter.is_valid(text):
        raise ValueError
    return text


_cron.accepts = "a cron expression such as */5 * * * *"  # type: ignore[attr-defined]


def _delivery_cap(value: Any) -> tuple[int, int] | None:
    """``N/seconds`` (at most N deliveries per recipient in any window of that many seconds)."""
    if isinstance(value, tuple | list):
        value = "/".join(map(str, value))
    text = str(value).strip()
    if not text or text.lower() == "off":
        return None
    count, sep, seconds = text.partition("/")
    if not sep or int(count) < 1 or int(seconds) < 1:
        raise ValueError
    return int(count), int(seconds)


_delivery_cap.accepts = "N/seconds such as 10/3600, or empty for no cap"  # type: ignore[attr-defined]


def parse_quiet_hours(value: Any) -> tuple[time, time] | None:
    """``HH:MM-HH:MM`` local wall-clock times; the window may cross midnight (``22:00-07:00``)."""
    if isinstance(value, tuple | list):
        value = "-".join(t.isoformat("minutes") if isinstance(t, time) else str(t) for t in value)
    text = str(value).strip()
    if not text or text.lower() == "off":
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError
    window = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    if window[0] == window[1] or any(t.tzinfo for t in window):
        raise ValueError
    return window


parse_quiet_hours.accepts = "HH:MM-HH:MM such as 22:00-07:00, or empty for none"  # type: ignore[attr-defined]


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = str(value).strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError from None
    return text


_timezone.accepts = "an IANA time zone name such as Europe/London"  # type: ignore[attr-defined]


def _callable(value: Any) -> Any:
    if not callable(value):
        raise ValueError
    return value


_callable.accepts = "a function"  # type: ignore[attr-defined]


def _tolerances(value: Any) -> dict[str, int]:
    """``seconds`` for every provider, and/or ``provider=seconds`` pairs: ``86400`` or ``600,mailgun=32400``."""
    # entry-point names; the provider modules stay unloaded
    from chimeway.webhooks.providers.installed import discover

    pairs = value.items() if isinstance(value, Mapping) else (
        part.partition("=")[::2] if "=" in part else ("*", part) for part in str(value).split(",") if part.strip()
    )
    result = {}
    known = discover()
    for name, seconds in pairs:
        name = str(name).strip()
        if name != "*" and name not in known:
            raise ValueError
        result[name] = _int(1, 31 * 86400)(str(seconds).strip())
    return result


_tolerances.accepts = (  # type: ignore[attr-defined]
    "seconds (1 to 2678400) for every provider and/or provider=seconds pairs such as 600,mailgun=32400"
)


def _rate_limits(value: Any) -> dict[str, tuple[int, int]]:
    """``adapter=calls/seconds`` pairs (``postmark=50/1,twilio=1/1``), or a dict of such values."""
    pairs = value.items() if isinstance(value, Mapping) else (
        part.partition("=")[::2] for part in str(value).split(",") if part.strip()
    )
    result = {}
    for name, limit in pairs:
        cap = _delivery_cap(limit)
        if cap is None:
            raise ValueError
        result[_name(name)] = cap
    return result


_rate_limits.accepts = "adapter=calls/seconds pairs separated by commas, e.g. postmark=50/1,twilio=1/1"  # type: ignore[attr-defined]


def _failover(value: Any) -> dict[str, str]:
    """``adapter=next`` pairs (``postmark=sendgrid,sendgrid=ses``): each adapter's next in its chain."""
    chain = _mapping(value)
    for start in chain:
        seen, name = {start}, start
        while name in chain:
            name = chain[name]
            if name in seen:  # a chain must end: its last adapter fails over to nothing
                raise ValueError
            seen.add(name)
    return chain


_failover.accepts = (  # type: ignore[attr-defined]
    "adapter=next-adapter pairs separated by commas, without cycles, e.g. postmark=sendgrid,sendgrid=ses"
)


def _setting(env: str, default: Any, parse: Callable[[Any], Any], doc: str, secret: bool = False) -> Any:
    metadata = {"env": env, "parse": parse, "doc": doc, "secret": secret}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The validated settings of one configured Chimeway."""

    database_url: str = _setting(
        "CHIMEWAY_DATABASE_URL", DEFAULT_DATABASE_URL, _database_url, "postgresql://… or sqlite:///path"
    )
    redis_url: str | None = _setting(
        "CHIMEWAY_REDIS_URL", None, _redis_url, "Redis for broker, dedupe, scheduler and pub/sub"
    )
    redis_namespace: str = _setting(
        "CHIMEWAY_REDIS_NAMESPACE", "chimeway", _name, "prefix of every Redis key Chimeway writes"
    )
    max_attempts: int = _setting("CHIMEWAY_MAX_ATTEMPTS", 5, _int(1, MAX_ATTEMPTS_LIMIT), "attempt budget per delivery")
    max_payload_bytes: int = _setting(
        "CHIMEWAY_MAX_PAYLOAD_BYTES", 262_144, _int(1, _JSONB_MAX_BYTES),
        "send(): largest payload (and metadata), as stored JSON text",
    )
    backoff_min_ms: int = _setting("CHIMEWAY_BACKOFF_MIN_MS", 15_000, _int(0), "retry backoff lower bound")
    backoff_max_ms: int = _setting("CHIMEWAY_BACKOFF_MAX_MS", 3_600_000, _int(0), "retry backoff upper bound")
    lease_seconds: int = _setting(
        "CHIMEWAY_LEASE_SECONDS", 300, _int(1), "how long a claim protects a dispatched delivery"
    )
    sweep_stall_seconds: int = _setting(
        "CHIMEWAY_SWEEP_STALL_SECONDS", 120, _int(1), "age after which the sweep re-enqueues a delivery"
    )
    reconcile_grace_seconds: int = _setting(
        "CHIMEWAY_RECONCILE_GRACE_SECONDS", 60, _int(0), "orphans younger than this are left alone"
    )
    reconcile_max_age_minutes: int = _setting(
        "CHIMEWAY_RECONCILE_MAX_AGE_MINUTES", 10_080, _int(1), "orphans older than this are not scanned"
    )
    webhook_max_bytes: int = _setting(
        "CHIMEWAY_WEBHOOK_MAX_BYTES", 1_048_576, _int(1), "webhook request size limit"
    )
    webhook_tolerance_seconds: dict[str, int] = _setting(
        "CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS", {}, _tolerances,
        "how old a provider's signed timestamp may be, in seconds; provider=seconds pairs per provider",
    )
    webhook_retention_days: int = _setting(
        "CHIMEWAY_WEBHOOK_RETENTION_DAYS", 14, _int(1), "raw webhook rows older than this are pruned"
    )
    retention_days: int = _setting(
        "CHIMEWAY_RETENTION_DAYS", 90, _int(0),
        "prune removes terminal deliveries (attempts, ledger events) and orphan events older than this; 0 keeps all",
    )
    postmark_webhook_user: str | None = _setting(
        "CHIMEWAY_POSTMARK_WEBHOOK_USER", None, _text, "Postmark webhook basic-auth user", secret=True
    )
    postmark_webhook_password: str | None = _setting(
        "CHIMEWAY_POSTMARK_WEBHOOK_PASSWORD", None, _text, "Postmark webhook basic-auth password", secret=True
    )
    sendgrid_webhook_public_key: str | None = _setting(
        "CHIMEWAY_SENDGRID_WEBHOOK_PUBLIC_KEY", None, _text, "base64 DER (SPKI) ECDSA P-256 key", secret=True
    )
    mailgun_webhook_signing_key: str | None = _setting(
        "CHIMEWAY_MAILGUN_WEBHOOK_SIGNING_KEY", None, _text, "Mailgun HMAC signing key", secret=True
    )
    standard_webhook_secret: str | None = _setting(
        "CHIMEWAY_STANDARD_WEBHOOK_SECRET", None, _text, "Standard Webhooks whsec_… secret", secret=True
    )
    default_adapter: str = _setting(
        "CHIMEWAY_DEFAULT_ADAPTER", "log", _name, "adapter for channels with no adapter of their own"
    )
    channel_adapters: dict[str, str] = _setting(
        "CHIMEWAY_CHANNEL_ADAPTERS", {}, _mapping, "per-channel adapter, email=smtp,sms=twilio"
    )
    statement_timeout_ms: int = _setting(
        "CHIMEWAY_STATEMENT_TIMEOUT_MS", 30_000, _int(100), "server-side statement_timeout (PostgreSQL)"
    )
    db_pool_size: int = _setting(
        "CHIMEWAY_DB_POOL_SIZE", 16, _int(1, 1000), "PostgreSQL pool size; keep >= worker threads"
    )
    db_pool_timeout_seconds: int = _setting(
        "CHIMEWAY_DB_POOL_TIMEOUT_SECONDS", 10, _int(1), "how long a thread waits for a pooled connection"
    )
    db_prepared_statements: bool = _setting(
        "CHIMEWAY_DB_PREPARED_STATEMENTS", True, parse_flag,
        "PostgreSQL: plan the worker's hot statements once per connection; false behind a transaction-pooling PgBouncer",
    )
    broker_heartbeat_ms: int = _setting(
        "CHIMEWAY_BROKER_HEARTBEAT_MS", 15_000, _int(1000),
        "Redis broker heartbeat timeout: a dead worker's messages return after this",
    )
    broker_maintenance_chance: int = _setting(
        "CHIMEWAY_BROKER_MAINTENANCE_CHANCE", 10_000, _int(0, 1_000_000),
        "Redis broker: commands per million that run queue maintenance",
    )
    reconcile_cron: str = _setting("CHIMEWAY_RECONCILE_CRON", "*/5 * * * *", _cron, "reconcile schedule")
    sweep_cron: str = _setting("CHIMEWAY_SWEEP_CRON", "* * * * *", _cron, "sweep schedule")
    prune_cron: str = _setting("CHIMEWAY_PRUNE_CRON", "17 3 * * *", _cron, "prune schedule")
    delivery_cap: tuple[int, int] | None = _setting(
        "CHIMEWAY_DELIVERY_CAP", None, _delivery_cap, "policy: at most N deliveries per recipient per window, N/seconds"
    )
    quiet_hours: tuple[time, time] | None = _setting(
        "CHIMEWAY_QUIET_HOURS", None, parse_quiet_hours, "policy: defer deliveries in this local window, 22:00-07:00"
    )
    quiet_hours_timezone: str = _setting(
        "CHIMEWAY_QUIET_HOURS_TIMEZONE", "UTC", _timezone, "policy: time zone of recipients with no metadata timezone"
    )
    console_user: str | None = _setting(
        "CHIMEWAY_CONSOLE_USER", None, _text, "web console: HTTP Basic user (with CHIMEWAY_CONSOLE_PASSWORD)"
    )
    console_password: str | None = _setting(
        "CHIMEWAY_CONSOLE_PASSWORD", None, _text, "web console: HTTP Basic password", secret=True
    )
    console_read_only: bool = _setting(
        "CHIMEWAY_CONSOLE_READ_ONLY", False, parse_flag, "web console: hide and refuse every action (redrive, cancel)"
    )
    console_tenant: str | None = _setting(
        "CHIMEWAY_CONSOLE_TENANT", None, _text, "web console: show only this tenant (unset: every tenant)"
    )
    rate_limits: dict[str, tuple[int, int]] = _setting(
        "CHIMEWAY_RATE_LIMITS", {}, _rate_limits,
        "calls per seconds per adapter, across every worker: postmark=50/1,twilio=1/1",
    )
    circuit_failures: int = _setting(
        "CHIMEWAY_CIRCUIT_FAILURES", 20, _int(1), "transient failures in a row that open an adapter's circuit"
    )
    circuit_open_seconds: int = _setting(
        "CHIMEWAY_CIRCUIT_OPEN_SECONDS", 30, _int(1), "how long an open circuit stops calls before one probe"
    )
    group_commit_max: int = _setting(
        "CHIMEWAY_GROUP_COMMIT_MAX", 32, _int(1, 1000),
        "PostgreSQL workers: most claims (and records) one statement takes for a process's threads; 1: none shared",
    )
    group_commit_wait_ms: int = _setting(
        "CHIMEWAY_GROUP_COMMIT_WAIT_MS", 2, _int(0, 50),
        "PostgreSQL workers: how long a busy worker's claim or record may wait for others to join its statement",
    )
    failover: dict[str, str] = _setting(
        "CHIMEWAY_FAILOVER", {}, _failover, "next adapter after a transient failure or an open circuit: postmark=sendgrid"
    )
    # Adapter options and policy rules are validated by the registry and the policy, which own them.
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"env": None})
    #: ``(tenant_id, provider) -> {setting: secret} | None``: each tenant's own provider webhook
    #: secrets (see chimeway.webhooks.tenancy); unset, the CHIMEWAY_*_WEBHOOK_* secrets serve every tenant.
    webhook_credentials: Callable[[str, str], Mapping[str, str] | None] | None = field(
        default=None, metadata={"env": None, "parse": _callable, "secret": True}
    )


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the README's configuration table."""
    rows = []
    for f in dataclasses.fields(Settings):
        env = f.metadata.get("env")
        if env:
            default = "" if f.default in (None, dataclasses.MISSING) else str(f.default)
            rows.append((env, default, f.metadata["doc"]))
    return rows


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Validate arguments, else environment, else defaults; raise ConfigurationError on the first bad one."""
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, f in known.items():
        env = f.metadata.get("env")
        if name in overrides and overrides[name] is not None:
            raw, source = overrides[name], f"{name}= (argument, variable {env})" if env else f"{name}="
        elif env and environ.get(env) not in (None, ""):
            raw, source = environ[env], env
        else:
            continue
        parse = f.metadata.get("parse")
        if parse is None:
            values[name] = raw
            continue
        try:
            values[name] = parse(raw)
        except (TypeError, ValueError):
            shown = "<hidden>" if f.metadata.get("secret") else repr(mask_url(str(raw)))
            raise ConfigurationError(
                f"invalid {source}: {shown}; expected {parse.accepts}", variable=env
            ) from None
    settings = Settings(**values)
    if settings.backoff_min_ms > settings.backoff_max_ms:
        raise ConfigurationError(
            "CHIMEWAY_BACKOFF_MIN_MS must not exceed CHIMEWAY_BACKOFF_MAX_MS", variable="CHIMEWAY_BACKOFF_MIN_MS"
        )
    return settings


def check_environment(environ: Mapping[str, str], adapter_variables: Callable[[], Iterable[str]]) -> None:
    """Refuse a ``CHIMEWAY_*`` variable that names no setting and no installed adapter's option, so a
    typo fails at configure time (as a mistyped argument does) instead of being silently ignored.

    ``adapter_variables`` lists the adapters' variables; it is only called when some variable is not
    a setting, because it imports every installed adapter.
    """
    settings = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata.get("env")}
    candidates = sorted(
        name for name in environ
        if name.startswith("CHIMEWAY_") and name not in settings and not name.startswith(RESERVED_PREFIXES)
    )
    if not candidates:
        return
    known = settings | set(adapter_variables())
    unknown = [name for name in candidates if name not in known]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "no setting or installed adapter option has this name"
    raise ConfigurationError(
        f"unknown environment variable {name}: {hint} (prefixes {', '.join(p + '*' for p in RESERVED_PREFIXES)} "
        "are reserved for Chimeway's own tests)",
        variable=name,
    )
