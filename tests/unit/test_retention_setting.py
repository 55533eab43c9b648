"""CHIMEWAY_RETENTION_DAYS: 90 by default, 0 keeps everything, and it decides prune's cutoffs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chimeway.ops.retention import cutoffs
from chimeway.wiring.config import load_settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_given_no_setting_then_ninety_days_are_kept_and_orphans_as_long():
    settings = load_settings(environ={})
    assert settings.retention_days == 90
    assert cutoffs(settings, NOW) == (NOW - timedelta(days=90), NOW - timedelta(days=90))


def test_given_zero_then_nothing_is_ever_pruned():
    assert cutoffs(load_settings(environ={"CHIMEWAY_RETENTION_DAYS": "0"}), NOW) is None


def test_given_a_retention_shorter_than_the_reconcile_max_age_then_orphans_wait_for_the_max_age():
    settings = load_settings(environ={"CHIMEWAY_RETENTION_DAYS": "1", "CHIMEWAY_RECONCILE_MAX_AGE_MINUTES": "4320"})
    assert cutoffs(settings, NOW) == (NOW - timedelta(days=1), NOW - timedelta(days=3))
