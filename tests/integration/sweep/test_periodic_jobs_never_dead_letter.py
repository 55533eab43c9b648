"""A scheduled job that fails (the database down while it runs) is logged and completed, never
dead-lettered: the scheduler's next tick runs it again. ``make chaos`` once failed on exactly this —
a sweep tick landing in a PostgreSQL restart left a dead letter although nothing was lost."""

from __future__ import annotations

import logging

import pytest

from chimeway.testing import drain, start_worker
from chimeway.wiring import runtime as runtime_mod
from tests.harness.servers import free_port

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def unreachable_database():
    """Chimeway on the stub broker, pointed at a PostgreSQL port where nothing listens (the server down)."""
    configured = runtime_mod.configure(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/chimeway", redis_url="", environ={},
        db_pool_timeout_seconds=1,
    )
    yield configured
    runtime_mod.reset()


@pytest.mark.parametrize(("actor", "job"), [("sweep_actor", "sweep"), ("reconcile_orphans", "reconcile")])
def test_given_the_database_is_down_when_a_scheduled_job_runs_then_it_logs_an_error_and_leaves_no_dead_letter(
    unreachable_database, caplog, actor, job
):
    with caplog.at_level(logging.ERROR, logger="chimeway"), start_worker(unreachable_database, threads=1):
        unreachable_database.actors[actor].send()
        assert drain(unreachable_database) == []
    failures = [r for r in caplog.records if r.getMessage().startswith(f"{job} failed")]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "next tick runs it again" in failures[0].getMessage()
