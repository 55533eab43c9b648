"""``chimeway scheduler``: fire the periodic jobs on their cron schedules, each tick exactly once.

Jobs (schedules from CHIMEWAY_RECONCILE_CRON, CHIMEWAY_SWEEP_CRON, CHIMEWAY_PRUNE_CRON): enqueue the
reconcile actor, enqueue the sweep actor, prune raw webhook rows and the history past retention
(run here: short DELETE loops in chunks); and every minute fold the outcome counts the triggers
appended (chimeway.ops.outcomes). Any number of scheduler processes may run: each tick is claimed in Redis with ``SET NX`` on
a key naming the job and the tick's own scheduled time, so exactly one process fires it, and a
restarted process starts from the next tick after "now", never re-firing one already past. Without
Redis the claims live in this process (one scheduler only).

A scheduler that falls behind (a slow job, a suspended host) fires only the latest tick it missed.
SIGTERM and SIGINT stop it after the job in progress; a job that raises is logged and the schedule
goes on.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from chimeway import db as dbmod
from chimeway.store.setnx import SetNX
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.scheduler")

#: How long a tick's claim is kept: longer than any schedule's interval of interest (daily prune).
CLAIM_TTL_SECONDS = 2 * 86_400
#: Longest single sleep: a stop request, a signal or a clock jump is noticed at least this often.
MAX_SLEEP_SECONDS = 0.2


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    action: Callable[[datetime], Any]  #: called with the tick's scheduled time


@dataclass
class SchedulerResult:
    fired: dict[str, int] = field(default_factory=dict)  #: ticks this process fired, per job
    skipped: dict[str, int] = field(default_factory=dict)  #: ticks another process had claimed


def default_jobs(runtime: Runtime) -> list[Job]:
    """Reconcile and sweep go to the workers through their actors; prune and the fold of outcome
    counts (a statement or two a minute) run in the scheduler."""
    from chimeway.ops import outcomes
    from chimeway.ops.retention import prune_history
    from chimeway.webhooks.pruner import prune

    def prune_all(tick: datetime) -> None:
        prune(runtime=runtime)
        prune_history(runtime=runtime)

    settings = runtime.settings
    return [
        Job("reconcile", settings.reconcile_cron, lambda tick: runtime.actors["reconcile_orphans"].send()),
        Job("sweep", settings.sweep_cron, lambda tick: runtime.actors["sweep_actor"].send()),
        Job("prune", settings.prune_cron, prune_all),
        Job("outcomes", outcomes.FOLD_CRON, lambda tick: outcomes.fold(runtime.database)),
    ]


class Scheduler:
    def __init__(self, runtime: Runtime, jobs: list[Job] | None = None) -> None:
        self.runtime = runtime
        self.jobs = default_jobs(runtime) if jobs is None else list(jobs)
        self.result = SchedulerResult()
        self._next: dict[str, datetime] = {}
        self._claims = SetNX(runtime.redis)

    def start(self, now: datetime) -> None:
        """Schedule every job's first tick strictly after ``now``."""
        self._next = {job.name: _after(job.cron, now) for job in self.jobs}

    def run_due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Fire the jobs due at ``now`` (claimed ticks only); the (job, tick) pairs this call fired."""
        if not self._next:
            self.start(now)
        fired = []
        for job in self.jobs:
            due = self._next[job.name]
            if due > now:
                continue
            # Behind schedule: the latest tick that is due stands for every one missed before it.
            tick = max(due, _latest(job.cron, now))
            self._next[job.name] = _after(job.cron, tick)
            try:
                claimed = self.claim(job.name, tick)
            except Exception as err:  # noqa: BLE001 - Redis down: skip the tick rather than risk firing it twice
                logger.error("scheduler: cannot claim %s tick %s (%s); skipped", job.name, tick.isoformat(), type(err).__name__)
                claimed = False
            if not claimed:
                self.result.skipped[job.name] = self.result.skipped.get(job.name, 0) + 1
                logger.info("scheduler: %s tick %s already fired by another scheduler", job.name, tick.isoformat())
                continue
            self.result.fired[job.name] = self.result.fired.get(job.name, 0) + 1
            fired.append((job.name, tick))
            try:
                job.action(tick)
            except Exception:
                logger.exception("scheduler: %s tick %s failed", job.name, tick.isoformat())
            else:
                logger.info("scheduler: %s tick %s fired", job.name, tick.isoformat())
        return fired

    def seconds_until_next(self, now: datetime) -> float:
        return max(0.0, min((due - now).total_seconds() for due in self._next.values())) if self._next else 0.0

    def claim(self, job: str, tick: datetime) -> bool:
        """Whether this process owns ``tick`` of ``job`` (SET NX on the tick's own timestamp)."""
        key = f"{self.runtime.settings.redis_namespace}:scheduler:{job}:{int(tick.timestamp())}"
        return self._claims.first(key, CLAIM_TTL_SECONDS)


def run(
    stop_event: threading.Event | None = None,
    *,
    now: Callable[[], datetime] = dbmod.now,
    jobs: list[Job] | None = None,
    runtime: Runtime,
) -> SchedulerResult:
    """Run the schedules until ``stop_event`` is set (or SIGTERM/SIGINT in the main thread)."""
    stop = stop_event or threading.Event()
    scheduler = Scheduler(runtime, jobs)
    scheduler.start(now())
    logger.info("scheduler started: %s", ", ".join(f"{job.name} '{job.cron}'" for job in scheduler.jobs))
    with _signals() as signalled:
        while not (stop.is_set() or signalled):
            scheduler.run_due(now())
            stop.wait(min(scheduler.seconds_until_next(now()), MAX_SLEEP_SECONDS))
    logger.info("scheduler stopped")
    return scheduler.result


def _after(cron: str, moment: datetime) -> datetime:
    """The first tick strictly after ``moment``."""
    return croniter(cron, moment).get_next(datetime)


def _latest(cron: str, moment: datetime) -> datetime:
    """The last tick at or before ``moment`` (croniter's get_prev is strictly before: nudge past it)."""
    return croniter(cron, moment + timedelta(microseconds=1)).get_prev(datetime)


@contextmanager
def _signals() -> Iterator[list[int]]:
    """A list that SIGTERM/SIGINT append to (graceful: the job in progress finishes). Main thread only.

    The handler only appends: setting a threading.Event from a signal handler can deadlock, since
    the handler may interrupt this very thread while it holds the event's lock.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
