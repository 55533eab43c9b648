"""``chimeway status`` in words: the orphan backlog and the part of it too old to reconcile are
two separate facts, so the line never reads as if the whole backlog will not reconcile."""

from __future__ import annotations

from chimeway.ops.status import render


def report(backlog: int, oldest: int | None, past_max_age: int) -> dict:
    return {
        "database": "postgresql", "broker": "redis",
        "schema": {"current": 2, "latest": 2, "pending": []},
        "table_estimates": {}, "open": {"pending": 0}, "recent": {"hour": []}, "stalled": 0,
        "retention": {"days": 90, "oldest_terminal_at": None, "oldest_open_at": None},
        "orphans": {"backlog": backlog, "oldest_age_seconds": oldest, "past_max_age": past_max_age},
    }


def test_given_a_young_orphan_backlog_then_status_does_not_say_it_is_unlikely_to_reconcile():
    text = render(report(1, 170, 0))
    assert "orphan backlog          1 (oldest 170 s)" in text.splitlines()
    assert "unlikely" not in text
    assert "  past max age, no longer reconciled  0" in text.splitlines()


def test_given_no_orphans_then_status_shows_an_empty_backlog_only():
    text = render(report(0, None, 0))
    assert "orphan backlog          0" in text.splitlines()
    assert "past max age" not in text


def test_status_labels_table_sizes_as_estimates_and_shows_the_retention_in_effect():
    text = render({**report(0, None, 0), "table_estimates": {"chimeway_events": 7},
                   "retention": {"days": 0, "oldest_terminal_at": None, "oldest_open_at": "2026-01-01T00:00:00+00:00"}})
    assert "rows (estimate)" in text
    assert "retention               off (everything is kept)" in text.splitlines()
    assert "  oldest open           2026-01-01T00:00:00+00:00" in text.splitlines()
