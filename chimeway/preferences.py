"""Recipients' channel preferences, optionally per category (``"*"`` covers every category).

::

    chimeway.preferences.set("bob@example.com", "email", False, category="marketing")
    chimeway.preferences.is_enabled("bob@example.com", "email", category="marketing")   # False
    chimeway.preferences.is_enabled("bob@example.com", "email", category="receipts")    # True

The policy reads :func:`is_enabled`: a delivery on a disabled channel/category is suppressed as
``channel_disabled``. With no row at all a channel is enabled. A row for the delivery's own category
wins over the ``"*"`` row, so "email off, but receipts on" is two rows.
"""

from __future__ import annotations

import peewee

from chimeway import db
from chimeway.models import Preference
from chimeway.suppressions import normalize_address

__all__ = ["ALL_CATEGORIES", "clear", "get", "is_enabled", "set"]

#: The category of a preference that covers every category of its channel.
ALL_CATEGORIES = "*"


def set(  # shadows the builtin on purpose: callers write chimeway.preferences.set()
    recipient: str,
    channel: str,
    enabled: bool,
    *,
    category: str = ALL_CATEGORIES,
    tenant_id: str = "default",
) -> None:
    """Turn ``channel`` (for ``category``, or all of them) on or off for ``recipient``; an upsert."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, not {enabled!r}")
    (
        Preference.insert(
            tenant_id=tenant_id,
            recipient=normalize_address(channel, recipient),
            channel=channel,
            category=category,
            enabled=enabled,
            updated_at=db.now(),
        )
        .on_conflict(
            conflict_target=[
                Preference.tenant_id,
                Preference.recipient,
                Preference.channel,
                Preference.category,
            ],
            preserve=[Preference.enabled, Preference.updated_at],
        )
        .execute()
    )


def get(
    recipient: str, channel: str, *, category: str = ALL_CATEGORIES, tenant_id: str = "default"
) -> bool | None:
    """The stored setting of exactly this row, or None when there is none (see :func:`is_enabled`)."""
    row = (
        Preference.select(Preference.enabled)
        .where(_recipient_channel(recipient, channel, tenant_id) & (Preference.category == category))
        .first()
    )
    return None if row is None else bool(row.enabled)


def is_enabled(
    recipient: str, channel: str, *, category: str | None = None, tenant_id: str = "default"
) -> bool:
    """Whether a delivery of ``category`` may go to ``recipient`` on ``channel``.

    The row for the category itself decides; else the ``"*"`` row; else the channel is enabled.
    """
    categories = [ALL_CATEGORIES] if category in (None, ALL_CATEGORIES) else [category, ALL_CATEGORIES]
    rows = {
        row.category: bool(row.enabled)
        for row in Preference.select(Preference.category, Preference.enabled).where(
            _recipient_channel(recipient, channel, tenant_id) & Preference.category.in_(categories)
        )
    }
    for candidate in categories:
        if candidate in rows:
            return rows[candidate]
    return True


def clear(
    recipient: str, channel: str | None = None, *, category: str | None = None, tenant_id: str = "default"
) -> int:
    """Delete ``recipient``'s rows (of one channel, one category, or all); returns how many went."""
    if channel is not None:
        query = Preference.delete().where(_recipient_channel(recipient, channel, tenant_id))
    else:
        # Each channel stores the address in its own normalized form (email: lower-case).
        email = (Preference.channel == "email") & (
            Preference.recipient == normalize_address("email", recipient)
        )
        other = (Preference.channel != "email") & (Preference.recipient == recipient.strip())
        query = Preference.delete().where((Preference.tenant_id == tenant_id) & (email | other))
    if category is not None:
        query = query.where(Preference.category == category)
    return query.execute()


def _recipient_channel(recipient: str, channel: str, tenant_id: str) -> peewee.Expression:
    return (
        (Preference.tenant_id == tenant_id)
        & (Preference.recipient == normalize_address(channel, recipient))
        & (Preference.channel == channel)
    )
