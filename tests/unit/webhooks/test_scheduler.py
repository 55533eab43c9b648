"""The scheduler's step function on an injected clock, with its in-memory claims (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from chimeway.ops.scheduler import Job, Scheduler
from chimeway.wiring.config import load_settings

T = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def scheduler(*crons: str) -> tuple[Scheduler, list[tuple[str, datetime]]]:
    calls: list[tuple[str, datetime]] = []
    runtime = SimpleNamespace(settings=load_settings(environ={}), redis=None)
    jobs = [Job(f"job{n}", cron, lambda tick, name=f"job{n}": calls.append((name, tick))) for n, cron in enumerate(crons)]
    return Scheduler(runtime, jobs), calls


def test_a_job_fires_at_each_scheduled_tick_and_not_before() -> None:
    s, calls = scheduler("*/5 * * * *")
    s.start(T)
    assert s.run_due(T + timedelta(minutes=4, seconds=59)) == []
    assert s.run_due(T + timedelta(minutes=5)) == [("job0", T + timedelta(minutes=5))]
    assert s.run_due(T + timedelta(minutes=5, seconds=30)) == []
    assert s.run_due(T + timedelta(minutes=10, seconds=1)) == [("job0", T + timedelta(minutes=10))]
    assert calls == [("job0", T + timedelta(minutes=5)), ("job0", T + timedelta(minutes=10))]


def test_a_scheduler_that_fell_behind_fires_only_the_latest_missed_tick() -> None:
    s, calls = scheduler("* * * * *")
    s.start(T)
    assert s.run_due(T + timedelta(minutes=7, seconds=10)) == [("job0", T + timedelta(minutes=7))]
    assert s.run_due(T + timedelta(minutes=8)) == [("job0", T + timedelta(minutes=8))]


def test_each_job_keeps_its_own_schedule() -> None:
    s, _ = scheduler("*/5 * * * *", "* * * * *")
    s.start(T)
    assert s.run_due(T + timedelta(minutes=1)) == [("job1", T + timedelta(minutes=1))]
    assert sorted(s.run_due(T + timedelta(minutes=5))) == [("job0", T + timedelta(minutes=5)), ("job1", T + timedelta(minutes=5))]
    assert s.seconds_until_next(T + timedelta(minutes=5, seconds=15)) == 45


def test_a_restarted_scheduler_never_fires_a_tick_already_past() -> None:
    first, _ = scheduler("* * * * * *")  # every second
    first.start(T - timedelta(milliseconds=500))
    assert first.run_due(T) == [("job0", T)]
    restarted, _ = scheduler("* * * * * *")
    restarted.start(T + timedelta(milliseconds=200))
    assert restarted.run_due(T + timedelta(milliseconds=200)) == []
    assert restarted.run_due(T + timedelta(seconds=1)) == [("job0", T + timedelta(seconds=1))]


def test_a_job_that_raises_is_logged_and_the_schedule_goes_on(caplog) -> None:
    runtime = SimpleNamespace(settings=load_settings(environ={}), redis=None)

    def broken(tick: datetime) -> None:
        raise RuntimeError("boom")

    s = Scheduler(runtime, [Job("broken", "* * * * *", broken)])
    s.start(T)
    assert s.run_due(T + timedelta(minutes=1)) == [("broken", T + timedelta(minutes=1))]
    assert s.run_due(T + timedelta(minutes=2)) == [("broken", T + timedelta(minutes=2))]
    assert s.result.fired == {"broken": 2}
    assert [r.levelname for r in caplog.records if r.name == "chimeway.scheduler"].count("ERROR") == 2


def test_the_same_tick_is_claimed_once_per_process_without_redis() -> None:
    s, _ = scheduler("* * * * *")
    assert s.claim("job0", T) is True
    assert s.claim("job0", T) is False
    assert s.claim("job0", T + timedelta(minutes=1)) is True


def test_a_scheduler_suspended_for_a_day_catches_up_with_one_tick_at_once() -> None:
    s, calls = scheduler("* * * * * *")  # every second: 86,400 missed ticks
    s.start(T)
    assert s.run_due(T + timedelta(days=1, milliseconds=300)) == [("job0", T + timedelta(days=1))]
    assert s.seconds_until_next(T + timedelta(days=1, milliseconds=300)) == 0.7
