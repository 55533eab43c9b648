"""The broker: Redis when CHIMEWAY_REDIS_URL is set, else Dramatiq's in-memory StubBroker.

Dramatiq's Redis defaults take a minute to notice a dead worker and rarely run maintenance, so a
killed worker's messages wait long before they return: Chimeway sets both explicitly.

:func:`wire` adds Chimeway's middleware and declares its actors on the runtime's broker, bound to
that broker explicitly: nothing here sets or reads Dramatiq's global broker (only
``chimeway.worker`` does, for the ``dramatiq`` command line), so importing Chimeway never binds an
actor to whatever broker happened to be global at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries

from chimeway.config import Settings
from chimeway.dispatch.actors import declare
from chimeway.dispatch.enqueue import MemoryDedupe, RedisDedupe
from chimeway.dispatch.middleware import DatabaseConnections, ExhaustionGuard
from chimeway.dispatch.resilience import MemoryGuard, RedisGuard


def build_broker(settings: Settings, client: redis.Redis | None) -> dramatiq.Broker:
    if client is None:
        broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    return RedisBroker(
        client=client,
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.broker_heartbeat_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )


def wire(runtime: Any, broker: dramatiq.Broker | None = None) -> None:
    """Attach the Redis client, dedupe, guard, broker, middleware and actors to ``runtime``."""
    settings = runtime.settings
    runtime.redis = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    runtime.broker = broker or build_broker(settings, runtime.redis)
    runtime.dedupe = RedisDedupe(runtime.redis, settings.redis_namespace) if runtime.redis else MemoryDedupe()
    runtime.guard = RedisGuard(settings, runtime.redis) if runtime.redis else MemoryGuard(settings)
    add_middleware(runtime.broker, runtime.database)
    runtime.actors = declare(runtime.broker, settings)


def add_middleware(broker: dramatiq.Broker, database: Any) -> None:
    """CurrentMessage, DatabaseConnections and ExhaustionGuard, once each, in the order
    ``chimeway.dispatch.middleware`` explains (just before Retries, when the broker has it)."""
    existing = {type(m): m for m in broker.middleware}
    if DatabaseConnections in existing:
        existing[DatabaseConnections].database = database  # reconfigured on the same broker
    place = {"before": Retries} if Retries in existing else {}
    for middleware in (DatabaseConnections(database), ExhaustionGuard()):
        if type(middleware) not in existing:
            broker.add_middleware(middleware, **place)
    if CurrentMessage not in existing:
        broker.add_middleware(CurrentMessage())


@contextlib.contextmanager
def start_worker(runtime: Any, *, threads: int = 4) -> Iterator[dramatiq.Worker]:
    """An in-process Dramatiq worker on the runtime's broker for the duration of the block (the demo
    and ``chimeway.testing`` use it; production workers are ``dramatiq chimeway.worker`` processes)."""
    worker = dramatiq.Worker(runtime.broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
