"""The suppression list: addresses a channel must not send to (hard bounces, complaints, opt-outs).

::

    chimeway.suppressions.add("bob@example.com", "email", "hard_bounce", source="postmark")
    chimeway.suppressions.is_suppressed("bob@example.com", "email")      # True
    chimeway.suppressions.remove("bob@example.com", "email")

The policy's first rule reads this list, so a suppressed address gets its deliveries suppressed
(``recipient_suppressed``) instead of sent. An entry with ``expires_at`` in the past no longer counts.
Addresses are stored after :func:`normalize_address`; lookups also match the address exactly as
given, so an entry another writer stored verbatim (a webhook copying the delivery's recipient) counts.
"""

from __future__ import annotations

import builtins
from datetime import datetime

import peewee

from chimeway import db
from chimeway.models import Suppression
from chimeway.states import SuppressionReason

__all__ = ["add", "is_suppressed", "list", "normalize_address", "remove"]


def normalize_address(channel: str, address: str) -> str:
    """The form addresses are stored and compared in: trimmed, and lower-case for email.

    Mailbox names are case-insensitive in practice everywhere, so ``Bob@Example.com`` and
    ``bob@example.com`` must hit the same suppression entry.
    """
    address = address.strip()
    return address.lower() if channel == "email" else address


def add(
    address: str,
    channel: str,
    reason: str = SuppressionReason.MANUAL,
    *,
    tenant_id: str = "default",
    source: str | None = None,
    expires_at: datetime | None = None,
) -> Suppression:
    """Suppress ``address`` on ``channel`` (idempotent) and return the entry.

    Adding an address already listed keeps one row: the reason and source become the new ones, and
    the entry lasts as long as the longer of the two (``None`` = for ever), so a temporary entry never
    shortens a permanent one. To shorten an entry, :func:`remove` it first.
    """
    reason = _reason(reason)
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be an aware datetime (UTC is stored)")
    address = normalize_address(channel, address)
    existing, new = Suppression.expires_at, peewee.EXCLUDED.expires_at
    longest = peewee.Case(
        None,
        [((existing.is_null() | new.is_null()), None), (new > existing, new)],
        existing,
    )
    with db.transaction():
        (
            Suppression.insert(
                tenant_id=tenant_id,
                channel=channel,
                address=address,
                reason=reason.value,
                source=source,
                expires_at=expires_at,
            )
            .on_conflict(
                conflict_target=[Suppression.tenant_id, Suppression.channel, Suppression.address],
                update={
                    Suppression.reason: peewee.EXCLUDED.reason,
                    Suppression.source: peewee.EXCLUDED.source,
                    Suppression.expires_at: longest,
                },
            )
            .execute()
        )
        return _entry(address, channel, tenant_id)


def remove(address: str, channel: str, *, tenant_id: str = "default") -> bool:
    """Take ``address`` off the list for ``channel``; False when it was not listed."""
    query = Suppression.delete().where(
        (Suppression.tenant_id == tenant_id)
        & (Suppression.channel == channel)
        & Suppression.address.in_(_forms(channel, address))
    )
    return query.execute() > 0


def is_suppressed(
    address: str, channel: str, *, tenant_id: str = "default", now: datetime | None = None
) -> bool:
    """Whether a live (unexpired) entry suppresses ``address`` on ``channel``."""
    query = Suppression.select(Suppression.id).where(
        (Suppression.tenant_id == tenant_id)
        & (Suppression.channel == channel)
        & Suppression.address.in_(_forms(channel, address))
        & _live(now or db.now())
    )
    return query.exists()


def list(  # shadows the builtin on purpose: callers write chimeway.suppressions.list()
    *,
    tenant_id: str = "default",
    channel: str | None = None,
    include_expired: bool = False,
    now: datetime | None = None,
) -> builtins.list[Suppression]:
    """The entries of a tenant, oldest first; expired ones only when asked for."""
    query = Suppression.select().where(Suppression.tenant_id == tenant_id)
    if channel is not None:
        query = query.where(Suppression.channel == channel)
    if not include_expired:
        query = query.where(_live(now or db.now()))
    return builtins.list(query.order_by(Suppression.created_at, Suppression.id))


def _forms(channel: str, address: str) -> builtins.list[str]:
    """The normalized address and the address as given: what an entry may have been stored as."""
    return sorted({normalize_address(channel, address), address.strip()})


def _live(now: datetime) -> peewee.Expression:
    return Suppression.expires_at.is_null() | (Suppression.expires_at > now)


def _entry(address: str, channel: str, tenant_id: str) -> Suppression:
    return Suppression.get(
        (Suppression.tenant_id == tenant_id)
        & (Suppression.channel == channel)
        & (Suppression.address == address)
    )


def _reason(reason: str) -> SuppressionReason:
    try:
        return SuppressionReason(reason)
    except ValueError:
        known = ", ".join(member.value for member in SuppressionReason)
        raise ValueError(f"unknown suppression reason {reason!r}; known reasons: {known}") from None
