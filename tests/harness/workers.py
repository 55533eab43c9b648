"""Real ``dramatiq chimeway.worker`` processes for one test, whose output the test can read.

Each worker runs in its own process group with its output (Dramatiq's log format, every logger at
INFO and above) in a file; :meth:`Workers.stop_all` stops them (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKER_READY = "Worker process is ready for action."


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def worker_environment(pg_url: str, redis_url: str, redis_namespace: str, call_log: Path) -> dict[str, str]:
    """The environment minus inherited ``CHIMEWAY_*``, plus fast settings for tests on those servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update({
        "CHIMEWAY_DATABASE_URL": pg_url,
        "CHIMEWAY_REDIS_URL": redis_url,
        "CHIMEWAY_REDIS_NAMESPACE": redis_namespace,
        "CHIMEWAY_DEFAULT_ADAPTER": "fake",
        "CHIMEWAY_FAKE_CALL_LOG": str(call_log),
        "CHIMEWAY_BACKOFF_MIN_MS": "1",
        "CHIMEWAY_BACKOFF_MAX_MS": "20",
        "CHIMEWAY_LEASE_SECONDS": "2",
        # A killed worker's messages come back after one second, found by any live worker's next command.
        "CHIMEWAY_BROKER_HEARTBEAT_MS": "1000",
        "CHIMEWAY_BROKER_MAINTENANCE_CHANCE": "1000000",
    })
    return env


class Workers:
    """Starts ``dramatiq chimeway.worker`` processes for one test and always stops them."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *, processes: int = 1, threads: int = 2, extra: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.directory / f"worker-{len(self.started)}.log"
        command = [sys.executable, "-m", "dramatiq", "chimeway.worker", *extra, "--processes", str(processes),
                   "--threads", str(threads), "--worker-shutdown-timeout", "3000"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.directory, start_new_session=True)
        self.started.append((proc, log))
        wait_for(lambda: log.read_text().count(WORKER_READY) >= processes or proc.poll() is not None, 30,
                 "the worker to boot")
        assert proc.poll() is None, log.read_text()
        return proc, log

    def stop_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in self.started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
