"""PostgreSQL: a sweep skips rows other transactions lock, and stands aside while another sweep runs."""

from __future__ import annotations

import psycopg2
import pytest

from chimeway.api import sweep
from chimeway.dispatch.sweep import SWEEP_LOCK_KEY, SweepResult

pytestmark = pytest.mark.postgres


@pytest.fixture
def dialect() -> str:
    """Only PostgreSQL has row locks and advisory locks to test."""
    return "postgres"


def test_a_sweep_skips_rows_another_transaction_has_locked(many_lost, pg_url) -> None:
    busy, free = many_lost(2)
    other = psycopg2.connect(pg_url)
    try:
        other.cursor().execute("SELECT id FROM chimeway_deliveries WHERE id = %s FOR UPDATE", (busy,))
        assert sweep() == SweepResult(pending=1, delivery_ids=(free,))
    finally:
        other.rollback()
        other.close()
    assert sweep() == SweepResult(pending=1, delivery_ids=(busy,))


def test_a_sweep_does_nothing_while_another_holds_the_sweep_lock(many_lost, queued, pg_url) -> None:
    many_lost(3)
    other = psycopg2.connect(pg_url)
    try:
        other.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,))
        assert sweep() == SweepResult(skipped=True)
        assert queued() == []
    finally:
        other.rollback()
        other.close()
    assert sweep().pending == 3
