"""``chimeway status`` in words: the orphan backlog and the part of it too old to reconcile are
two separate facts, so the line never reads as if the whole backlog will not reconcile."""

from __future__ import annotations

from chimeway.status import render


def report(backlog: int, oldest: int | None, past_max_age: int) -> dict:
    return {
        "database": "postgresql", "broker": "redis",
        "schema": {"current": 2, "latest": 2, "pending": []},
        "tables": {}, "deliveries": [], "stalled": 0,
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
