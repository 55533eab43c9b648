"""Test helpers for applications that use Chimeway, also loaded as a pytest plugin.

Fixtures (available in any project that installs Chimeway):

- ``chimeway_sqlite_url`` — a SQLite database path in a temporary directory;
- ``chimeway_runtime`` — Chimeway configured on it (migrated) with the in-memory StubBroker and
  millisecond retry backoff, so a test of retries takes no time;
- ``chimeway_broker`` — that runtime's StubBroker;
- ``chimeway_worker`` — a started Dramatiq worker on it (stopped afterwards);
- ``chimeway_fake_calls`` — the ``fake`` adapter's calls, cleared before the test.

Helpers: :func:`drain` waits until every queued message (retries included) is processed;
:func:`fake_calls` lists the ``fake`` adapter's calls; :func:`start_worker` runs a worker in a
``with`` block. Nothing here runs at import: the plugin only declares fixtures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["drain", "fake_calls", "start_worker"]


def _runtime(runtime: Any = None) -> Any:
    if runtime is not None:
        return runtime
    from chimeway.wiring.runtime import current

    return current()


def start_worker(runtime: Any = None, *, threads: int = 4) -> contextlib.AbstractContextManager[Any]:
    """A Dramatiq worker on the runtime's broker for the duration of the block."""
    from chimeway.dispatch.broker import start_worker as start

    return start(_runtime(runtime), threads=threads)


def drain(runtime: Any = None, *, timeout_ms: int = 30_000) -> list[Any]:
    """Wait until the stub broker's Chimeway queues (every lane, and their delay queues) are empty and every message
    was processed; a worker must be running. Returns the dead-lettered messages (never raises for
    them: a test asserts on them)."""
    from dramatiq.brokers.stub import StubBroker

    from chimeway.dispatch.lanes import LANES

    broker = _runtime(runtime).broker
    if not isinstance(broker, StubBroker):
        raise TypeError(f"drain() needs the in-memory StubBroker (configure with redis_url=''), not {broker!r}")
    for lane in LANES.values():  # a delivery's messages all go to its own lane: one pass is enough
        if lane.queue in broker.queues:
            broker.join(lane.queue, timeout=timeout_ms, fail_fast=False)
    return list(broker.dead_letters)


def fake_calls(delivery_id: str | None = None, runtime: Any = None) -> list[Any]:
    """The ``fake`` adapter's calls in this process (each with delivery_id, attempt_number,
    idempotency_key, outcome and the request), oldest first."""
    return _runtime(runtime).registry.adapter_class("fake").calls_for(delivery_id)


@pytest.fixture
def chimeway_sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'chimeway.sqlite3'}"


@pytest.fixture
def chimeway_runtime(chimeway_sqlite_url: str) -> Iterator[Any]:
    """Chimeway on a fresh, migrated SQLite database, the in-memory broker and fast backoff; reset after."""
    from chimeway.store.migrator import migrate
    from chimeway.wiring.runtime import configure, reset

    runtime = configure(
        database_url=chimeway_sqlite_url, redis_url="", environ={}, backoff_min_ms=1, backoff_max_ms=50
    )
    migrate(runtime.database)
    try:
        yield runtime
    finally:
        reset()


@pytest.fixture
def chimeway_broker(chimeway_runtime: Any) -> Any:
    return chimeway_runtime.broker


@pytest.fixture
def chimeway_worker(chimeway_runtime: Any) -> Iterator[Any]:
    with start_worker(chimeway_runtime) as worker:
        yield worker


@pytest.fixture
def chimeway_fake_calls(chimeway_runtime: Any) -> Any:
    """A function ``calls(delivery_id=None)`` over the ``fake`` adapter's calls, cleared first."""
    chimeway_runtime.registry.adapter_class("fake").reset()
    return lambda delivery_id=None: fake_calls(delivery_id, chimeway_runtime)
