"""``chimeway.suppressions``: an idempotent list of addresses, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chimeway import suppressions
from chimeway.models import Suppression

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_an_added_address_is_suppressed_on_its_channel_only(configured) -> None:
    entry = suppressions.add("bob@example.com", "email", "hard_bounce", source="postmark")
    assert (entry.reason, entry.source, entry.expires_at) == ("hard_bounce", "postmark", None)
    assert suppressions.is_suppressed("bob@example.com", "email")
    assert not suppressions.is_suppressed("bob@example.com", "sms")
    assert not suppressions.is_suppressed("bob@example.com", "email", tenant_id="acme")


def test_adding_the_same_address_twice_keeps_one_entry_with_the_latest_reason(configured) -> None:
    suppressions.add("bob@example.com", "email", "manual")
    entry = suppressions.add("BOB@example.com", "email", "complaint", source="sendgrid")
    assert Suppression.select().count() == 1
    assert (entry.address, entry.reason, entry.source) == ("bob@example.com", "complaint", "sendgrid")


def test_a_temporary_entry_never_shortens_a_permanent_one(configured) -> None:
    suppressions.add("bob@example.com", "email", "hard_bounce")
    entry = suppressions.add("bob@example.com", "email", expires_at=NOW + timedelta(days=1))
    assert entry.expires_at is None


def test_adding_again_extends_an_expired_entry(configured) -> None:
    suppressions.add("bob@example.com", "email", expires_at=NOW - timedelta(days=1))
    assert not suppressions.is_suppressed("bob@example.com", "email", now=NOW)
    entry = suppressions.add("bob@example.com", "email", expires_at=NOW + timedelta(days=1))
    assert entry.expires_at == NOW + timedelta(days=1)
    assert suppressions.is_suppressed("bob@example.com", "email", now=NOW)


def test_an_expired_entry_is_not_suppressed_and_listed_only_when_asked(configured) -> None:
    suppressions.add("old@example.com", "email", expires_at=NOW - timedelta(seconds=1))
    suppressions.add("new@example.com", "email", expires_at=NOW + timedelta(seconds=1))
    assert not suppressions.is_suppressed("old@example.com", "email", now=NOW)
    assert [e.address for e in suppressions.list(now=NOW)] == ["new@example.com"]
    assert {e.address for e in suppressions.list(now=NOW, include_expired=True)} == {
        "old@example.com",
        "new@example.com",
    }


def test_list_filters_by_tenant_and_channel(configured) -> None:
    suppressions.add("+15550001", "sms", "unsubscribe")
    suppressions.add("bob@example.com", "email")
    suppressions.add("bob@example.com", "email", tenant_id="acme")
    assert [e.address for e in suppressions.list(channel="sms")] == ["+15550001"]
    assert [e.tenant_id for e in suppressions.list(tenant_id="acme")] == ["acme"]


def test_a_removed_address_is_no_longer_suppressed(configured) -> None:
    suppressions.add("bob@example.com", "email")
    assert suppressions.remove("Bob@Example.com", "email") is True
    assert not suppressions.is_suppressed("bob@example.com", "email")
    assert suppressions.remove("bob@example.com", "email") is False


def test_an_unknown_reason_or_a_naive_expiry_is_refused(configured) -> None:
    with pytest.raises(ValueError, match="known reasons: hard_bounce, complaint, unsubscribe, manual"):
        suppressions.add("bob@example.com", "email", "annoyed")
    with pytest.raises(ValueError, match="aware"):
        suppressions.add("bob@example.com", "email", expires_at=datetime(2026, 1, 1))
    assert Suppression.select().count() == 0


def test_an_entry_another_writer_stored_verbatim_still_suppresses_that_address(configured) -> None:
    # Given an entry written as the delivery spelled it (as webhook ingestion copies a recipient)
    Suppression.create(tenant_id="default", channel="email", address="Ann@Example.com", reason="hard_bounce")
    # Then the same spelling is suppressed, and remove() takes it off the list
    assert suppressions.is_suppressed("Ann@Example.com", "email")
    assert suppressions.remove("Ann@Example.com", "email") is True
    assert Suppression.select().count() == 0
