"""Redis loses the messages (a restart without persistence): the sweep sends them again and a real
worker process (``dramatiq chimeway.worker``) delivers them, on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import chimeway
from chimeway import db
from chimeway import runtime as runtime_mod
from chimeway.dispatch.actors import QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def runtime(pg_url: str, redis_url: str, redis_namespace: str) -> Iterator[runtime_mod.Runtime]:
    """This process sends and sweeps; retries wait 3 s so a test can lose one from the delay queue."""
    yield runtime_mod.configure(
        database_url=pg_url,
        redis_url=redis_url,
        redis_namespace=redis_namespace,
        default_adapter="fake",
        sweep_stall_seconds=1,
        backoff_min_ms=3000,
        backoff_max_ms=3000,
        environ={},
    )
    runtime_mod.reset()


class Worker:
    """One ``dramatiq chimeway.worker`` process group on the test's database and Redis namespace."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env, self.directory = env, directory
        self.call_log = directory / "fake-calls.jsonl"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        log = self.directory / f"worker-{len(self.procs)}.log"
        command = [sys.executable, "-m", "dramatiq", "chimeway.worker", "--processes", "1", "--threads", "2"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                env=self.env,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        wait_for(lambda: "ready for action" in log.read_text() or proc.poll() is not None, 30, "the worker")
        assert proc.poll() is None, log.read_text()

    def end(self, sig: int = signal.SIGTERM) -> None:
        """Signal every process group this test started (SIGKILL: the machine lost power) and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def worker(runtime: runtime_mod.Runtime, tmp_path: Path) -> Iterator[Worker]:
    settings = runtime.settings
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHIMEWAY_")}
    env.update(
        CHIMEWAY_DATABASE_URL=settings.database_url,
        CHIMEWAY_REDIS_URL=settings.redis_url,
        CHIMEWAY_REDIS_NAMESPACE=settings.redis_namespace,
        CHIMEWAY_DEFAULT_ADAPTER="fake",
        CHIMEWAY_BACKOFF_MIN_MS="3000",
        CHIMEWAY_BACKOFF_MAX_MS="3000",
        CHIMEWAY_FAKE_CALL_LOG=str(tmp_path / "fake-calls.jsonl"),
    )
    started = Worker(env, tmp_path)
    yield started
    started.end()


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
    wait_for(lambda: chimeway.get_delivery(sent.id).status == "succeeded", 30, "the delivery to succeed")
    assert [a.attempt_number for a in chimeway.attempts(sent.id)] == [1]
    assert calls_logged(worker.call_log, sent.id) == 1


def test_given_a_crash_lost_a_scheduled_retry_when_the_sweep_runs_then_the_retry_happens(
    runtime, worker
) -> None:
    # Given a delivery whose first attempt failed; its retry waits for 3 s (in Redis and the worker)
    worker.start()
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary", "ok"]})
    wait_for(lambda: chimeway.get_delivery(sent.id).status == "failed", 30, "the first attempt to fail")
    # When the worker's machine and Redis both go down and come back empty
    worker.end(signal.SIGKILL)
    assert lose_every_message(runtime) > 0
    worker.start()
    # Then nothing happens until the sweep finds the retry overdue, and then the retry runs
    overdue = chimeway.get_delivery(sent.id).next_attempt_at + timedelta(seconds=1.5)
    wait_for(lambda: db.now() > overdue, 30, "the retry to be overdue")
    assert chimeway.get_delivery(sent.id).status == "failed"
    assert chimeway.sweep().failed == 1
    wait_for(lambda: chimeway.get_delivery(sent.id).status == "succeeded", 30, "the retry to succeed")
    assert [a.attempt_number for a in chimeway.attempts(sent.id)] == [1, 2]
    assert calls_logged(worker.call_log, sent.id) == 2
