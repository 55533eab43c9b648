"""A reconcile batch aborted by a PostgreSQL deadlock runs again; other database errors surface."""

from __future__ import annotations

import peewee
import pytest

from chimeway.webhooks.reconciler import BATCH_ATTEMPTS, _retrying


class DriverError(Exception):
    def __init__(self, pgcode: str) -> None:
        super().__init__(pgcode)
        self.pgcode = pgcode


def failing(times: int, pgcode: str):
    calls = []

    def run() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise peewee.OperationalError(DriverError(pgcode))  # how peewee wraps the driver's error
        return "done"

    return run, calls


@pytest.mark.parametrize("pgcode", ["40P01", "40001"])
def test_a_batch_aborted_by_a_deadlock_or_serialization_failure_runs_again(pgcode: str) -> None:
    run, calls = failing(BATCH_ATTEMPTS - 1, pgcode)
    assert _retrying(run) == "done" and len(calls) == BATCH_ATTEMPTS


def test_a_batch_that_keeps_deadlocking_raises_after_its_attempts() -> None:
    run, calls = failing(BATCH_ATTEMPTS, "40P01")
    with pytest.raises(peewee.OperationalError):
        _retrying(run)
    assert len(calls) == BATCH_ATTEMPTS


def test_any_other_database_error_is_raised_at_once() -> None:
    run, calls = failing(1, "57014")  # statement timeout
    with pytest.raises(peewee.OperationalError):
        _retrying(run)
    assert len(calls) == 1
