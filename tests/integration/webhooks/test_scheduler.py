"""The scheduler against real Redis and real processes: every tick fired exactly once, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chimeway import db
from chimeway.models import Event
from chimeway.ops.scheduler import Job, Scheduler, default_jobs
from chimeway.testing import drain, start_worker
from chimeway.wiring import runtime as runtime_mod

pytestmark = pytest.mark.redis

T = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)

SCHEDULER_PROCESS = textwrap.dedent(
    """
    import os, sys
    from chimeway.wiring import runtime
    from chimeway.ops.scheduler import Job, run

    database_url, redis_url, namespace, out = sys.argv[1:5]
    rt = runtime.configure(database_url=database_url, redis_url=redis_url, redis_namespace=namespace, environ={})
    with open(out, "a") as record:
        def fire(tick):
            record.write(tick.isoformat() + "\\n")
            record.flush()
        print("ready", flush=True)
        result = run(jobs=[Job("tick", "* * * * * *", fire)], runtime=rt)
    rt.close()
    print("stopped", result.fired.get("tick", 0), result.skipped.get("tick", 0), flush=True)
    """
)


def test_two_schedulers_sharing_redis_fire_a_tick_once(redis_url, redis_namespace, sqlite_url) -> None:
    runtime = runtime_mod.configure(database_url=sqlite_url, redis_url=redis_url, redis_namespace=redis_namespace, environ={})
    try:
        fired: list[tuple[str, datetime]] = []
        make = lambda: Scheduler(runtime, [Job("tick", "*/5 * * * *", lambda tick: fired.append(("tick", tick)))])  # noqa: E731
        first, second = make(), make()
        first.start(T)
        second.start(T)
        assert first.run_due(T + timedelta(minutes=5)) == [("tick", T + timedelta(minutes=5))]
        assert second.run_due(T + timedelta(minutes=5)) == []
        assert second.result.skipped == {"tick": 1}
        restarted = make()  # a restart that somehow saw the same tick due again still cannot fire it
        restarted.start(T + timedelta(minutes=4))
        assert restarted.run_due(T + timedelta(minutes=5)) == []
        assert fired == [("tick", T + timedelta(minutes=5))]
    finally:
        runtime_mod.reset()


@pytest.mark.slow
def test_three_scheduler_processes_over_several_ticks_fire_each_tick_exactly_once(
    redis_url, redis_namespace, sqlite_url, tmp_path: Path
) -> None:
    outputs = [tmp_path / f"ticks-{n}.txt" for n in range(3)]
    script = tmp_path / "scheduler_process.py"
    script.write_text(SCHEDULER_PROCESS)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), sqlite_url, redis_url, redis_namespace, str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for out in outputs
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        time.sleep(4.5)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        results = [process.communicate(timeout=20) for process in processes]
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr
        assert stdout.splitlines()[-1].startswith("stopped")
    ticks = Counter(line for out in outputs if out.exists() for line in out.read_text().split())
    assert len(ticks) >= 3, ticks
    assert set(ticks.values()) == {1}, f"ticks fired more than once: {ticks}"
    seconds = sorted(datetime.fromisoformat(tick) for tick in ticks)
    assert all(b - a == timedelta(seconds=1) for a, b in zip(seconds, seconds[1:])), "a tick was skipped"
    fired = sum(int(stdout.split()[-2]) for stdout, _ in results)
    assert fired == len(ticks)


def test_the_default_jobs_enqueue_reconcile_and_sweep_fold_outcomes_and_a_worker_links_the_orphan(
    database_url, secrets, make_delivery, orphan, redis_namespace
) -> None:
    runtime = runtime_mod.configure(
        database_url=database_url, redis_url="", redis_namespace=redis_namespace, environ={}, **secrets.settings()
    )
    try:
        orphan("postmark", "pm-scheduled")
        make_delivery("postmark", "pm-scheduled")
        scheduler = Scheduler(runtime)
        assert [job.name for job in scheduler.jobs] == ["reconcile", "sweep", "prune", "outcomes"]
        scheduler.start(T + timedelta(minutes=4, seconds=59))
        assert sorted(name for name, _ in scheduler.run_due(T + timedelta(minutes=5))) == [
            "outcomes", "reconcile", "sweep"]
        # the delivery made above was counted by the trigger, and the fold moved it into its hour
        assert db.execute("SELECT count(*) FROM chimeway_outcome_changes").fetchone()[0] == 0
        assert db.execute("SELECT status, deliveries FROM chimeway_outcome_hours").fetchall() == [("succeeded", 1)]
        with start_worker(runtime):
            assert drain(runtime) == []
        assert [e.type for e in Event.select().where(Event.type == "reconciled")] == ["reconciled"]
        assert [job.cron for job in default_jobs(runtime)] == ["*/5 * * * *", "* * * * *", "17 3 * * *", "* * * * *"]
    finally:
        runtime_mod.reset()


def test_a_tick_that_cannot_be_claimed_because_redis_is_down_is_skipped_not_fired(sqlite_url, caplog) -> None:
    runtime = runtime_mod.configure(database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0", environ={})
    try:
        fired: list[datetime] = []
        scheduler = Scheduler(runtime, [Job("sweep", "* * * * *", fired.append)])
        scheduler.start(T)
        assert scheduler.run_due(T + timedelta(minutes=1)) == []
        assert fired == [] and scheduler.result.skipped == {"sweep": 1}
        assert "cannot claim sweep tick" in caplog.text
    finally:
        runtime_mod.reset()
