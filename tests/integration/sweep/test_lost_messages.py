"""Redis loses the messages (a restart without persistence): the sweep sends them again and a real
worker process (``dramatiq chimeway.worker``, run by the shared harness) delivers them, on
PostgreSQL and Redis."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import chimeway
from chimeway import db
from chimeway.dispatch.actors import QUEUE
from chimeway.wiring import runtime as runtime_mod
from tests.harness.processes import Supervisor
from tests.harness.servers import Reaper
from tests.harness.stack import chimeway_env, dramatiq_argv, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

#: Retries wait this long, so a test can lose one while it waits.
BACKOFF_MS = 3000


@pytest.fixture
def runtime(pg_url: str, redis_url: str, redis_namespace: str) -> Iterator[runtime_mod.Runtime]:
    """This process sends and sweeps, on the workers' database and Redis namespace."""
    yield runtime_mod.configure(
        database_url=pg_url,
        redis_url=redis_url,
        redis_namespace=redis_namespace,
        default_adapter="fake",
        sweep_stall_seconds=1,
        backoff_min_ms=BACKOFF_MS,
        backoff_max_ms=BACKOFF_MS,
        environ={},
    )
    runtime_mod.reset()


class Worker:
    """``dramatiq chimeway.worker`` (one process, two threads) under the harness's supervisor."""

    def __init__(self, runtime: runtime_mod.Runtime, directory: Path) -> None:
        settings = runtime.settings
        self.call_log = directory / "fake-calls.jsonl"
        self.reaper = Reaper()
        self.supervisor = Supervisor(directory, self.reaper, cwd=str(directory))
        env = chimeway_env(
            settings.database_url,
            settings.redis_url,
            redis_namespace=settings.redis_namespace,
            default_adapter="fake",
            backoff_min_ms=BACKOFF_MS,
            backoff_max_ms=BACKOFF_MS,
            fake_call_log=self.call_log,
        )
        self.supervisor.add(
            "worker", dramatiq_argv("chimeway.worker", processes=1, threads=2), env, keep_alive=False
        )

    def start(self) -> None:
        process = self.supervisor.start("worker")
        wait_until(
            lambda: "ready for action" in process.log.read_text() or not process.alive(),
            30,
            what="the worker to boot",
        )
        assert process.alive(), self.supervisor.tail("worker")

    def crash(self) -> None:
        """SIGKILL the worker's whole process group, as a machine losing power."""
        self.supervisor.kill("worker", signal.SIGKILL)

    def close(self) -> None:
        self.supervisor.stop_all()
        self.reaper.close()


@pytest.fixture
def worker(runtime: runtime_mod.Runtime, tmp_path: Path) -> Iterator[Worker]:
    started = Worker(runtime, tmp_path)
    yield started
    started.close()


def lose_every_message(runtime: runtime_mod.Runtime) -> int:
    """What a Redis restart without persistence does to this test's namespace: every key gone."""
    keys = list(runtime.redis.scan_iter(match=f"{runtime.settings.redis_namespace}*"))
    return runtime.redis.delete(*keys) if keys else 0


def calls_logged(call_log: Path, delivery_id: str) -> int:
    lines = call_log.read_text().splitlines() if call_log.exists() else []
    return sum(json.loads(line)["delivery_id"] == delivery_id for line in lines)


def test_given_redis_lost_a_fresh_send_when_the_sweep_runs_then_a_worker_delivers_it_once(
    runtime, worker
) -> None:
    # Given a committed send whose message Redis then lost
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]})
    assert runtime.redis.hlen(f"{runtime.settings.redis_namespace}:{QUEUE}.msgs") == 1
    assert lose_every_message(runtime) > 0
    worker.start()
    time.sleep(1.5)
    assert chimeway.get_delivery(sent.id).status == "pending"  # nothing left for the worker to do
    # When the sweep runs once the delivery has stalled
    result = chimeway.sweep()
    # Then it re-enqueues exactly that delivery and the worker delivers it, once
    assert (result.pending, result.delivery_ids) == (1, (sent.id,))
    wait_until(
        lambda: chimeway.get_delivery(sent.id).status == "succeeded", 30, what="the delivery to succeed"
    )
    assert [a.attempt_number for a in chimeway.attempts(sent.id)] == [1]
    assert calls_logged(worker.call_log, sent.id) == 1


def test_given_a_crash_lost_a_scheduled_retry_when_the_sweep_runs_then_the_retry_happens(
    runtime, worker
) -> None:
    # Given a delivery whose first attempt failed; its retry waits for 3 s (in Redis and the worker)
    worker.start()
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary", "ok"]})
    wait_until(
        lambda: chimeway.get_delivery(sent.id).status == "failed", 30, what="the first attempt to fail"
    )
    # When the worker's machine and Redis both go down and come back empty
    worker.crash()
    assert lose_every_message(runtime) > 0
    worker.start()
    # Then nothing happens until the sweep finds the retry overdue, and then the retry runs
    overdue = chimeway.get_delivery(sent.id).next_attempt_at + timedelta(seconds=1.5)
    wait_until(lambda: db.now() > overdue, 30, what="the retry to be overdue")
    assert chimeway.get_delivery(sent.id).status == "failed"
    assert chimeway.sweep().failed == 1
    wait_until(lambda: chimeway.get_delivery(sent.id).status == "succeeded", 30, what="the retry to succeed")
    assert [a.attempt_number for a in chimeway.attempts(sent.id)] == [1, 2]
    assert calls_logged(worker.call_log, sent.id) == 2
