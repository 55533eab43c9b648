"""Fixtures for the dispatch tests: Chimeway on each dialect with the stub broker, fast backoff, a
worker, and the fake adapter's calls; and real ``dramatiq chimeway.worker`` processes on PostgreSQL
and Redis (``workers``, with ``redis_runtime`` for this process and the cross-process ``call_log``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chimeway.testing import fake_calls, start_worker
from chimeway.wiring import runtime as runtime_mod
from tests.harness.workers import Workers, worker_environment


@pytest.fixture
def runtime(database_url: str) -> Iterator[runtime_mod.Runtime]:
    """Chimeway on the parametrized database (sqlite, postgres), stub broker, millisecond backoff."""
    configured = runtime_mod.configure(
        database_url=database_url, redis_url="", environ={}, backoff_min_ms=1, backoff_max_ms=20,
        default_adapter="fake",
    )
    configured.registry.adapter_class("fake").reset()
    yield configured
    runtime_mod.reset()


@pytest.fixture
def worker(runtime: runtime_mod.Runtime) -> Iterator[Any]:
    with start_worker(runtime, threads=4) as started:
        yield started


@pytest.fixture
def calls(runtime: runtime_mod.Runtime) -> Callable[..., list[Any]]:
    """The fake adapter's calls in this process: ``calls()`` or ``calls(delivery_id)``."""
    return lambda delivery_id=None: fake_calls(delivery_id, runtime)


@pytest.fixture
def queued(runtime: runtime_mod.Runtime) -> Callable[[], int]:
    """How many deliver messages wait on the stub broker (immediate and delayed)."""
    from chimeway.dispatch.actors import QUEUE

    return lambda: sum(runtime.broker.queues[name].qsize() for name in (QUEUE, f"{QUEUE}.DQ"))


@pytest.fixture
def create(runtime: runtime_mod.Runtime) -> Callable[..., Any]:
    """Record a pending fake delivery without enqueuing a message (the test sends its own)."""
    from chimeway.models import new_id
    from chimeway.store import deliveries

    def make(outcomes: list[str] | None = None, *, max_attempts: int = 5, **fields: Any) -> Any:
        values = dict(channel="email", recipient="ann@example.com", adapter="fake",
                      payload={"fake_outcomes": outcomes or ["ok"]}, metadata={}, tenant_id="default",
                      notification_id=new_id(), idempotency_key=None, max_attempts=max_attempts,
                      delay_fallback=False, category=None)
        values.update(fields)
        delivery, created = deliveries.create(**values)
        assert created
        return delivery

    return make


# --- real worker processes on PostgreSQL and Redis -------------------------------------------------


@pytest.fixture
def call_log(tmp_path: Path) -> Path:
    """The fake adapter's cross-process call log (one JSON line per call, from every worker)."""
    return tmp_path / "fake-calls.jsonl"


@pytest.fixture
def worker_env(pg_url: str, redis_url: str, redis_namespace: str, call_log: Path) -> dict[str, str]:
    return worker_environment(pg_url, redis_url, redis_namespace, call_log)


@pytest.fixture
def redis_runtime(pg_url: str, redis_url: str, redis_namespace: str) -> Iterator[runtime_mod.Runtime]:
    """This process's Chimeway, on the same database and Redis namespace as the workers (sends only)."""
    configured = runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                       default_adapter="fake", environ={})
    yield configured
    runtime_mod.reset()


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """``dramatiq chimeway.worker`` processes started by the test (``workers.start()``), stopped after."""
    started = Workers(worker_env, tmp_path)
    yield started
    started.stop_all()
