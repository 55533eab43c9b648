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
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import redis
from dramatiq.brokers import redis as dramatiq_redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries

from chimeway import db
from chimeway.dispatch.actors import declare
from chimeway.dispatch.batch import Batches
from chimeway.dispatch.lanes import LANES
from chimeway.dispatch.middleware import DatabaseConnections, ExhaustionGuard
from chimeway.dispatch.resilience import MemoryGuard, RedisGuard
from chimeway.states import Priority
from chimeway.store.setnx import SetNX
from chimeway.webhooks import reconciler
from chimeway.wiring.config import Settings
from chimeway.wiring.runtime_type import Runtime

#: The longest an idle consumer of the high lane or of a delay queue sleeps between polls (ms).
PROMPT_POLL_MS = 100


class RedisBroker(dramatiq_redis.RedisBroker):
    """Dramatiq's RedisBroker that can also enqueue many messages in one round trip (:meth:`pipelined`).

    Dramatiq runs every broker command as its Lua ``dispatch`` script, one round trip per message;
    inside :meth:`pipelined`, this thread's ``enqueue`` commands are queued on a Redis pipeline and
    sent together when the block ends. Everything else (middleware hooks, message ids, delays) is
    Dramatiq's own ``enqueue``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = threading.local()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # An idle Redis consumer polls with a backoff up to the worker's timeout (1 s by default): a
        # high-priority message, or a delayed one coming due, would wait up to that long. Those
        # consumers poll at least every PROMPT_POLL_MS (a few cheap Redis calls a second).
        if queue_name == LANES[Priority.HIGH].queue or queue_name.endswith(".DQ"):
            timeout = min(timeout, PROMPT_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        pipeline = self.client.pipeline(transaction=False)
        self._batch.pipeline = pipeline
        try:
            yield
        finally:
            self._batch.pipeline = None
        pipeline.execute()  # not reached when the block raised: nothing is sent then

    def _dispatch(self, command: str) -> Any:
        pipeline = getattr(self._batch, "pipeline", None)
        if pipeline is None or command != "enqueue":
            return super()._dispatch(command)
        script, keys = self.scripts["dispatch"], [self.namespace]

        def queue(queue_name: str, *args: Any) -> None:
            # The arguments of Dramatiq's own _dispatch, in its order (dramatiq/brokers/redis.py).
            script(keys=keys, client=pipeline, args=[
                command, dramatiq_redis.current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, self._should_do_maintenance(command), self._max_unpack_size(), *args,
            ])

        return queue


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


def wire(runtime: Runtime, broker: dramatiq.Broker | None = None) -> None:
    """Attach the Redis client, its SET NX helper, the broker, middleware and actors to ``runtime``."""
    settings = runtime.settings
    runtime.redis = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    runtime.broker = broker or build_broker(settings, runtime.redis)
    runtime.setnx = SetNX(runtime.redis)
    runtime.guard = RedisGuard(settings, runtime.redis) if runtime.redis else MemoryGuard(settings)
    # Group commit needs PostgreSQL's arrays; SQLite takes one writer at a time anyway.
    if db.is_postgres(runtime.database) and settings.group_commit_max > 1:
        runtime.batches = Batches(settings, runtime.guard)
    add_middleware(runtime.broker, runtime)
    runtime.actors = {**declare(runtime.broker, runtime), **reconciler.declare(runtime.broker, runtime)}


def add_middleware(broker: dramatiq.Broker, runtime: Runtime) -> None:
    """CurrentMessage, DatabaseConnections and ExhaustionGuard, once each, in the order
    ``chimeway.dispatch.middleware`` explains (just before Retries, when the broker has it)."""
    existing = {type(m): m for m in broker.middleware}
    if DatabaseConnections in existing:  # reconfigured on the same broker
        existing[DatabaseConnections].database = runtime.database
    if ExhaustionGuard in existing:
        existing[ExhaustionGuard].runtime = runtime
    place = {"before": Retries} if Retries in existing else {}
    for middleware in (DatabaseConnections(runtime.database), ExhaustionGuard(runtime)):
        if type(middleware) not in existing:
            broker.add_middleware(middleware, **place)
    if CurrentMessage not in existing:
        broker.add_middleware(CurrentMessage())


@contextlib.contextmanager
def start_worker(runtime: Runtime, *, threads: int = 4) -> Iterator[dramatiq.Worker]:
    """An in-process Dramatiq worker on the runtime's broker for the duration of the block (the demo
    and ``chimeway.testing`` use it; production workers are ``dramatiq chimeway.worker`` processes)."""
    worker = dramatiq.Worker(runtime.broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
