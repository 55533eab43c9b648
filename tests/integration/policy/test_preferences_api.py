"""``chimeway.preferences``: per channel and category, ``"*"`` for all, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from chimeway import preferences
from chimeway.models import Preference


def test_a_channel_with_no_preference_is_enabled(configured) -> None:
    assert preferences.get("bob@example.com", "email") is None
    assert preferences.is_enabled("bob@example.com", "email", category="news")


def test_setting_a_preference_twice_keeps_one_row_with_the_latest_value(configured) -> None:
    preferences.set("bob@example.com", "email", False)
    preferences.set("bob@example.com", "email", True)
    assert Preference.select().count() == 1
    assert preferences.get("bob@example.com", "email") is True


def test_the_category_row_wins_and_the_star_row_covers_the_rest(configured) -> None:
    preferences.set("bob@example.com", "email", False)
    preferences.set("bob@example.com", "email", True, category="receipts")
    assert preferences.is_enabled("bob@example.com", "email", category="receipts")
    assert not preferences.is_enabled("bob@example.com", "email", category="news")
    assert not preferences.is_enabled("bob@example.com", "email")
    assert preferences.get("bob@example.com", "email", category="news") is None


def test_preferences_are_kept_per_tenant(configured) -> None:
    preferences.set("bob@example.com", "email", False, tenant_id="acme")
    assert preferences.is_enabled("bob@example.com", "email")
    assert not preferences.is_enabled("bob@example.com", "email", tenant_id="acme")


def test_clear_removes_one_category_one_channel_or_everything(configured) -> None:
    preferences.set("Bob@Example.com", "email", False)
    preferences.set("bob@example.com", "email", False, category="news")
    preferences.set("bob@example.com", "push", False)
    preferences.set("alice@example.com", "email", False)
    assert preferences.clear("bob@example.com", "email", category="news") == 1
    assert preferences.clear("bob@example.com", "email") == 1
    preferences.set("bob@example.com", "email", False)
    assert preferences.clear("bob@example.com") == 2
    assert [row.recipient for row in Preference.select()] == ["alice@example.com"]


def test_enabled_must_be_a_boolean(configured) -> None:
    with pytest.raises(TypeError, match="True or False"):
        preferences.set("bob@example.com", "email", "no")  # type: ignore[arg-type]
