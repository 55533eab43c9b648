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
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import dramatiq
import redis
from dramatiq.brokers import redis as dramatiq_redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
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

logger = logging.getLogger("chimeway.dispatch")

#: The longest an idle consumer of the high lane or of a delay queue sleeps between polls (ms).
PROMPT_POLL_MS = 100


class RedisBroker(dramatiq_redis.RedisBroker):
    """Dramatiq's RedisBroker that can also enqueue many messages in one round trip (:meth:`pipelined`),
    and whose consumers send their acks together (:class:`GroupedAcks`).

    Dramatiq runs every broker command as its Lua ``dispatch`` script, one round trip per message;
    inside :meth:`pipelined`, this thread's ``enqueue`` commands are queued on a Redis pipeline and
    sent together when the block ends. Everything else (middleware hooks, message ids, delays) is
    Dramatiq's own ``enqueue``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = threading.local()
        #: per queue, the acks its worker threads noted and its consumer has not sent yet (kept here,
        #: not on the consumer, so that a consumer rebuilt after a lost connection sends them)
        self.unsent_acks: dict[str, deque[Any]] = {}
        self.ack_many = self.client.register_script(_ACK_MANY)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # An idle Redis consumer polls with a backoff up to the worker's timeout (1 s by default): a
        # high-priority message, or a delayed one coming due, would wait up to that long. Those
        # consumers poll at least every PROMPT_POLL_MS (a few cheap Redis calls a second).
        if queue_name == LANES[Priority.HIGH].queue or queue_name.endswith(".DQ"):
            timeout = min(timeout, PROMPT_POLL_MS)
        return GroupedAcks(self, queue_name, prefetch, timeout)

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


#: Dramatiq's ``ack`` (its ``dispatch.lua``) for many messages of one queue: the heartbeat, then each
#: message out of this worker's acks set and, if it was in it, its body deleted. The keys are Dramatiq's
#: own layout (namespace, ``__acks__.<worker>.<queue>``, ``<queue>.msgs``); the tests check the result
#: through Dramatiq (an acked message is never given back when its worker is declared dead).
_ACK_MANY = """
local namespace, timestamp, queue_name, worker_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local queue_acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local queue_messages = namespace .. ":" .. queue_name .. ".msgs"
redis.call("zadd", namespace .. ":__heartbeats__", timestamp, worker_id)
for i = 4, #ARGV do
    if redis.call("srem", queue_acks, ARGV[i]) > 0 then
        redis.call("hdel", queue_messages, ARGV[i])
    end
end
return #ARGV - 3
"""


class GroupedAcks(dramatiq_redis._RedisConsumer):
    """Dramatiq's Redis consumer, with its acks sent together.

    Dramatiq 2 has each worker thread ack its own message when it is done: one Lua call per message,
    a sixth of a Chimeway worker's Python time in make bench. Here a worker thread's ``ack`` only
    notes the message; the consumer's own thread sends every noted ack in one call before it next
    fetches or sleeps, and when it closes (a worker stops its threads before its consumers). An ack
    is late by at most one poll of its queue. Until it is sent the message stays fetched-by-this-worker
    in Redis, which is where a crash leaves any message Dramatiq is working on: the worker's death
    gives it back, and its delivery, already recorded, makes the second message a no-op
    (docs/architecture.md §9). A failed send keeps the acks for the consumer that replaces this one.
    """

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.unsent = broker.unsent_acks.setdefault(queue_name, deque())

    def ack(self, message: Any) -> None:
        self.unsent.append(message)  # deque.append: safe from any worker thread

    def __next__(self) -> Any:
        if not self.message_cache:  # about to fetch (or sleep): the acks first, which frees prefetch room
            self.send_acks()
        return super().__next__()

    def close(self) -> None:
        try:
            self.send_acks()
        except Exception as err:  # the worker is stopping: those messages come back, as no-ops
            logger.warning("%d acks on %s not sent (%s); their messages will be redelivered and find their "
                           "deliveries done", len(self.unsent), self.queue_name, type(err).__name__)
        super().close()

    def send_acks(self) -> None:
        unsent, taken = self.unsent, []
        while unsent:
            taken.append(unsent.popleft())
        if not taken:
            return
        broker = self.broker
        try:
            broker.ack_many(keys=[broker.namespace], args=[
                dramatiq_redis.current_millis(), self.queue_name, broker.broker_id,
                *(message.options["redis_message_id"] for message in taken)])
        except Exception as err:
            unsent.extendleft(reversed(taken))  # kept, in order, for the next send
            if isinstance(err, redis.ConnectionError):
                raise ConnectionClosed(err) from None
            raise
        for message in taken:
            self.queued_message_ids.discard(message.message_id)


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
