"""Policy: rules that decide, before the claim, whether a delivery is sent now, later or never.

A rule is a callable ``rule(delivery, now) -> Decision``. It returns a value and writes nothing; the
deliver actor acts on the value (suppress → the suppression writer, defer → the deferral writer and
a delayed message). :func:`evaluate` runs the rules in order and the first decision that is not
:class:`Proceed` wins. Built-in rules, in order:

=================  ==========================================================================
suppression_list   the address is on the suppression list → Suppress(recipient_suppressed)
preferences        the recipient turned the channel/category off → Suppress(channel_disabled)
delivery_cap       CHIMEWAY_DELIVERY_CAP deliveries were created for the recipient in the window
                   before this one → Suppress(delivery_cap_reached)
quiet_hours        the recipient's local clock is inside the quiet window → Defer(until its end)
delayed_fallback   a ``delay_fallback`` delivery whose notification was read → Suppress(already_read)
=================  ==========================================================================

When the built-in rules alone run with no cap and no quiet-hours setting, what they decide for a
delivery follows from facts read with its row (:func:`decided_by_facts`); the deliver actor then lets
the statement that loads a delivery claim it when those facts clear it, and runs the rules for the rest.

Add a rule with :func:`register` (a function's ``__name__`` or a ``name`` attribute names it) and go
back to the built-ins with :func:`reset`::

    def vip_only(delivery, now):
        return Proceed() if delivery.metadata.get("vip") else Suppress(Reason.CHANNEL_DISABLED)

    chimeway.policy.register(vip_only, before="quiet_hours")
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chimeway import preferences as preference_store
from chimeway import suppressions
from chimeway.models import Delivery
from chimeway.states import Reason, Status
from chimeway.wiring.config import Settings, load_settings, parse_quiet_hours

__all__ = [
    "BUILTIN_RULES",
    "Decision",
    "Defer",
    "FACTS_SQL",
    "PROCEEDS_BY_FACTS_SQL",
    "PolicyFacts",
    "Proceed",
    "Rule",
    "Suppress",
    "decided_by_facts",
    "facts_sql",
    "evaluate",
    "quiet_hours_end",
    "register",
    "reset",
    "rules",
    "unregister",
]

logger = logging.getLogger("chimeway.policy")


@dataclass(frozen=True)
class Proceed:
    """Send now (as far as this rule is concerned)."""


@dataclass(frozen=True)
class Suppress:
    """Never send: the delivery becomes suppressed with ``reason`` (terminal)."""

    reason: Reason


@dataclass(frozen=True)
class Defer:
    """Not before ``until`` (aware): the delivery waits, deferred, and its message is re-enqueued then."""

    until: datetime

    def __post_init__(self) -> None:
        if self.until.tzinfo is None:
            raise ValueError("Defer.until must be an aware datetime")


Decision = Proceed | Suppress | Defer


class Rule(Protocol):
    """A policy rule: looks at the delivery (and the database), returns a decision, writes nothing."""

    def __call__(self, delivery: Delivery, now: datetime) -> Decision: ...


# --- the facts the first two rules read, and the fast path that reads them in SQL -------------------
# One home with the rules they mirror: ``deliveries`` puts these fragments into its load and
# load-and-claim statements (docs/architecture.md §5), and a test drives every rule through both paths.


@dataclass(frozen=True)
class PolicyFacts:
    """What the built-in suppression and preference rules would read, loaded with the delivery at ``now``."""

    now: datetime
    suppressed: bool
    #: the effective preference (the category's row, else the "*" row, else enabled)
    enabled: bool


def facts_sql(now: str = "%s") -> str:
    """The columns ``suppressed`` and ``enabled`` (NULL: no preference row) of the delivery row aliased
    ``d``, as :func:`suppression_list` and :func:`preferences` read them; ``now`` (the suppressions'
    expiry is compared with it) is a placeholder, or a column for a batch of deliveries."""
    return f"""EXISTS (SELECT 1 FROM chimeway_suppressions s
                WHERE s.tenant_id = d.tenant_id AND s.channel = d.channel AND s.address = d.recipient
                  AND (s.expires_at IS NULL OR s.expires_at > {now})) AS suppressed,
       (SELECT p.enabled FROM chimeway_preferences p
         WHERE p.tenant_id = d.tenant_id AND p.recipient = d.recipient AND p.channel = d.channel
           AND (p.category = COALESCE(d.category, '*') OR p.category = '*')
         ORDER BY CASE WHEN p.category = '*' THEN 1 ELSE 0 END
         LIMIT 1) AS enabled"""


#: :func:`facts_sql` for one delivery. Placeholder: now.
FACTS_SQL = facts_sql()

#: PostgreSQL, over a delivery row aliased ``x`` with :data:`FACTS_SQL`'s columns: true when, while
#: :func:`decided_by_facts`, every built-in rule must Proceed — not suppressed, its channel enabled,
#: no ``delay_fallback``, no ``quiet_hours`` of its own, and a recipient already in the form
#: ``suppressions.normalize_address`` gives (printable ASCII without spaces, lower-case for email), so
#: the facts are exact. False means "ask the rules", never "suppress".
PROCEEDS_BY_FACTS_SQL = """(NOT x.suppressed AND x.enabled IS NOT FALSE AND NOT x.delay_fallback
                 AND NOT (x.metadata ? 'quiet_hours') AND x.recipient ~ '^[!-~]+$'
                 AND (x.channel <> 'email' OR x.recipient = lower(x.recipient)))"""


# --- the built-in rules -----------------------------------------------------------------------------


def _facts(delivery: Delivery, now: datetime) -> Any:
    """The facts the deliver actor loaded with the row (``deliveries.load``) for this ``now``, or None."""
    facts = delivery.policy_facts
    return facts if facts is not None and facts.now == now else None


def suppression_list(delivery: Delivery, now: datetime) -> Decision:
    facts = _facts(delivery, now)
    if facts is not None:
        suppressed = facts.suppressed
    else:
        suppressed = suppressions.is_suppressed(
            delivery.recipient, delivery.channel, tenant_id=delivery.tenant_id, now=now
        )
    return Suppress(Reason.RECIPIENT_SUPPRESSED) if suppressed else Proceed()


def preferences(delivery: Delivery, now: datetime) -> Decision:
    facts = _facts(delivery, now)
    if facts is not None:
        enabled = facts.enabled
    else:
        enabled = preference_store.is_enabled(
            delivery.recipient, delivery.channel, category=delivery.category, tenant_id=delivery.tenant_id
        )
    return Proceed() if enabled else Suppress(Reason.CHANNEL_DISABLED)


def delivery_cap(delivery: Delivery, now: datetime) -> Decision:
    """At most N deliveries per recipient in any window of S seconds, counted by creation time.

    Only deliveries created before this one count (and not those policy suppressed or that were
    cancelled unsent), so the first N of a burst pass whatever order workers take them in, and a
    delivery that passed once still passes on its retries.
    """
    cap = _settings().delivery_cap
    if cap is None:
        return Proceed()
    limit, seconds = cap
    created = delivery.created_at
    earlier = (Delivery.created_at < created) | (
        (Delivery.created_at == created) & (Delivery.id < delivery.id)
    )
    unsent = (Delivery.status == Status.SUPPRESSED) | (
        (Delivery.status == Status.CANCELLED) & (Delivery.attempt_count == 0)
    )
    count = (
        Delivery.select(Delivery.id)
        .where(
            (Delivery.tenant_id == delivery.tenant_id)
            & (Delivery.recipient == delivery.recipient)
            & (Delivery.created_at >= created - timedelta(seconds=seconds))
            & earlier
            & ~unsent
        )
        .limit(limit)
        .count()
    )
    return Suppress(Reason.DELIVERY_CAP_REACHED) if count >= limit else Proceed()


def quiet_hours(delivery: Delivery, now: datetime) -> Decision:
    """Defer to the end of the quiet window of the recipient's local clock.

    The window is ``metadata["quiet_hours"]`` ("22:00-07:00"; present but empty: none for this
    delivery), else CHIMEWAY_QUIET_HOURS; the zone is ``metadata["timezone"]``, else
    CHIMEWAY_QUIET_HOURS_TIMEZONE.
    """
    settings = _settings()
    metadata = delivery.metadata or {}
    window = settings.quiet_hours
    if "quiet_hours" in metadata:
        try:
            window = parse_quiet_hours(metadata["quiet_hours"] or "")
        except (TypeError, ValueError):
            logger.warning("delivery %s: invalid metadata quiet_hours, using the setting", delivery.id)
    if window is None:
        return Proceed()
    zone = _zone(metadata.get("timezone"), settings.quiet_hours_timezone, delivery.id)
    until = quiet_hours_end(window, zone, now)
    return Proceed() if until is None else Defer(until)


def delayed_fallback(delivery: Delivery, now: datetime) -> Decision:
    if not delivery.delay_fallback:
        return Proceed()
    read = Delivery.select(Delivery.id).where(
        (Delivery.tenant_id == delivery.tenant_id)
        & (Delivery.notification_id == delivery.notification_id)
        & Delivery.read_at.is_null(False)
    )
    return Suppress(Reason.ALREADY_READ) if read.exists() else Proceed()


#: The built-in rules, in the order they run.
BUILTIN_RULES: tuple[tuple[str, Rule], ...] = (
    ("suppression_list", suppression_list),
    ("preferences", preferences),
    ("delivery_cap", delivery_cap),
    ("quiet_hours", quiet_hours),
    ("delayed_fallback", delayed_fallback),
)

_BUILTIN_LIST = list(BUILTIN_RULES)
_rules: list[tuple[str, Rule]] = list(BUILTIN_RULES)
_lock = threading.Lock()


# --- the registry -----------------------------------------------------------------------------------


def evaluate(delivery: Delivery, now: datetime) -> Decision:
    """Run the rules in order; the first decision that is not Proceed wins."""
    if now.tzinfo is None:
        raise ValueError("policy.evaluate needs an aware datetime (use chimeway.db.now())")
    for name, rule in list(_rules):
        decision = rule(delivery, now)
        if not isinstance(decision, Proceed | Suppress | Defer):
            raise TypeError(
                f"policy rule {name!r} returned {decision!r}; a rule must return Proceed(), Suppress(reason) "
                "or Defer(until)"
            )
        if not isinstance(decision, Proceed):
            detail = decision.reason.value if isinstance(decision, Suppress) else decision.until.isoformat()
            logger.info(
                "delivery %s: policy rule %s: %s %s", delivery.id, name, type(decision).__name__, detail
            )
            return decision
    return Proceed()


def decided_by_facts() -> bool:
    """Whether the rules as configured read nothing but what ``deliveries.load`` reads with the row.

    True for the built-in rules alone with neither CHIMEWAY_DELIVERY_CAP nor CHIMEWAY_QUIET_HOURS
    set: then a delivery whose row is clear of the suppression list and of disabled preferences, has
    no ``delay_fallback`` and no ``quiet_hours`` of its own can only Proceed, and the deliver actor
    claims it in the statement that loads it (``deliveries.load_and_claim``). The policy still runs
    for every other delivery, in full.
    """
    settings = _settings()
    return settings.delivery_cap is None and settings.quiet_hours is None and _rules == _BUILTIN_LIST


def register(rule: Rule, *, before: str | None = None, name: str | None = None) -> str:
    """Add ``rule``, last or just before the rule named ``before``; returns the name it runs under."""
    name = name or getattr(rule, "name", None) or getattr(rule, "__name__", None)
    if not isinstance(name, str) or not callable(rule):
        raise TypeError(f"a policy rule is a named callable rule(delivery, now) -> Decision, not {rule!r}")
    with _lock:
        names = [known for known, _ in _rules]
        if name in names:
            raise ValueError(f"a policy rule named {name!r} is already registered; rules: {', '.join(names)}")
        if before is not None and before not in names:
            raise ValueError(f"no policy rule named {before!r}; rules: {', '.join(names)}")
        _rules.insert(names.index(before) if before else len(_rules), (name, rule))
    return name


def unregister(name: str) -> None:
    """Remove the rule named ``name`` (built-ins too: e.g. to replace quiet hours with your own)."""
    with _lock:
        names = [known for known, _ in _rules]
        if name not in names:
            raise ValueError(f"no policy rule named {name!r}; rules: {', '.join(names)}")
        del _rules[names.index(name)]


def reset() -> None:
    """Back to the built-in rules only."""
    with _lock:
        _rules[:] = BUILTIN_RULES


def rules() -> list[str]:
    """The names of the rules, in the order they run."""
    return [name for name, _ in _rules]


# --- quiet hours arithmetic -------------------------------------------------------------------------


def quiet_hours_end(window: tuple[time, time], zone: tzinfo, now: datetime) -> datetime | None:
    """When the quiet window that ``now`` falls in ends (UTC), or None when ``now`` is outside it.

    Works on the local wall clock, so the answer is right across midnight and DST: the end is the
    first instant after ``now`` at which the local clock reads the window's end (when a DST jump
    skips that reading, the instant of the jump).
    """
    start, end = window
    local = now.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= wall < end, local.date()
    else:  # the window crosses midnight: it ends tomorrow if we are in its evening part
        inside = wall >= start or wall < end
        end_day = local.date() + timedelta(days=1) if wall >= start else local.date()
    if not inside:
        return None
    return _first_reading_after(end_day, end, zone, now)


def _first_reading_after(day: date, wall: time, zone: tzinfo, after: datetime) -> datetime:
    earlier = datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)
    later = datetime.combine(day, wall, tzinfo=zone).replace(fold=1).astimezone(UTC)
    if earlier <= later:
        # Normal, or repeated when clocks go back: the first reading still ahead of us.
        return earlier if earlier > after else later
    # Skipped when clocks go forward (fold=1 maps before the jump, fold=0 after it): the jump itself.
    return _transition(later, earlier, zone)


def _transition(low: datetime, high: datetime, zone: tzinfo) -> datetime:
    """The first second in (low, high] whose UTC offset is high's: bisect, zoneinfo lists no transitions."""
    offset = high.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _zone(name: object, default: str, delivery_id: str) -> tzinfo:
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("delivery %s: unknown metadata timezone, using %s", delivery_id, default)
    return ZoneInfo(default)


def use_settings(settings: Settings) -> None:
    """The settings the built-in rules read (CHIMEWAY_DELIVERY_CAP, CHIMEWAY_QUIET_HOURS…), handed
    over by ``configure()``. The rules are process-wide (:func:`register`), so their settings are
    too: the last configured runtime's (docs/architecture.md §9)."""
    global _configured
    _configured = settings


_configured: Settings | None = None


def _settings() -> Settings:
    # Before any configure(): the settings configure() would load from the environment.
    return _configured if _configured is not None else load_settings()
