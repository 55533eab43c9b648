"""The Redis broker's consumers send their acks together (``chimeway.dispatch.broker.GroupedAcks``).

Checked through Dramatiq itself, on real Redis: an ack sent by the grouped call is one Dramatiq
honours (the message is gone, and it is not given back when its worker is declared dead), a message
fetched and not acked still is given back, a real worker drains a queue with fewer ack calls than
messages, and acks whose send failed (Redis killed) are kept for the consumer that replaces the one
that failed.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis as redis_lib
from dramatiq.errors import ConnectionClosed

from chimeway.dispatch.broker import GroupedAcks, RedisBroker
from tests.harness.servers import PrivateRedis, Reaper

QUEUE = "grouped-acks-test"


def _broker(client: Any, namespace: str, **options: Any) -> RedisBroker:
    broker = RedisBroker(client=client, namespace=namespace, **options)
    broker.declare_queue(QUEUE)
    return broker


def _enqueue(broker: RedisBroker, count: int) -> None:
    for index in range(count):
        broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="noop", args=(index,), kwargs={}, options={}))


def _fetch(consumer: GroupedAcks, count: int) -> list[Any]:
    fetched: list[Any] = []
    deadline = time.monotonic() + 10
    while len(fetched) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            fetched.append(message)
    assert len(fetched) == count
    return fetched


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    connection = redis_lib.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_acks_wait_for_the_consumer_and_then_go_in_one_call(client: Any, redis_namespace: str) -> None:
    broker = _broker(client, redis_namespace)
    _enqueue(broker, 5)
    consumer = broker.consume(QUEUE, prefetch=5, timeout=50)
    assert isinstance(consumer, GroupedAcks)
    messages = _fetch(consumer, 5)
    calls = []
    script = broker.ack_many
    broker.ack_many = lambda **kw: calls.append(kw["args"][3:]) or script(**kw)  # type: ignore[method-assign]
    fetched = broker.do_qsize(QUEUE)  # Dramatiq counts each fetched message twice (its body, its ack entry)
    assert fetched == 10
    for message in messages:
        consumer.ack(message)
    assert broker.do_qsize(QUEUE) == fetched, "a noted ack is not sent by the worker thread that noted it"
    assert next(consumer) is None  # the queue is empty: the consumer sends the acks, fetches nothing
    assert broker.do_qsize(QUEUE) == 0
    assert calls == [[m.options["redis_message_id"] for m in messages]]
    assert consumer.outstanding_message_count == 0


def test_a_dead_workers_acked_messages_stay_acked_and_the_unacked_come_back(client: Any, redis_namespace: str) -> None:
    dead = _broker(client, redis_namespace)
    _enqueue(dead, 4)
    consumer = dead.consume(QUEUE, prefetch=4, timeout=50)
    acked = _fetch(consumer, 4)[:3]
    for message in acked:
        consumer.ack(message)
    consumer.send_acks()
    # the fourth message was fetched and never acked (its body and its ack entry are left); then its
    # worker "dies" (no more heartbeats)
    assert dead.do_qsize(QUEUE) == 2
    time.sleep(0.3)
    alive = _broker(client, redis_namespace, heartbeat_timeout=100, maintenance_chance=1_000_000)
    survivor = alive.consume(QUEUE, prefetch=10, timeout=50)
    back = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not back:
        message = next(survivor)
        if message is not None:
            back.append(message)
    acked_ids = {m.message_id for m in acked}
    assert len(back) == 1 and back[0].message_id not in acked_ids, "only the unacked message is given back"


def test_a_worker_drains_a_queue_with_fewer_ack_calls_than_messages(client: Any, redis_namespace: str) -> None:
    broker = _broker(client, redis_namespace)
    done = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="noop")
    def noop(index: int) -> None:
        with lock:
            done.append(index)

    calls = []
    script = broker.ack_many
    broker.ack_many = lambda **kw: calls.append(len(kw["args"]) - 3) or script(**kw)  # type: ignore[method-assign]
    for index in range(300):
        noop.send(index)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while broker.do_qsize(QUEUE) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert sorted(done) == list(range(300))
    assert broker.do_qsize(QUEUE) == 0, "every message acked, the last ones when the consumer closed at the latest"
    assert sum(calls) == 300
    assert len(calls) < 300, f"{len(calls)} ack calls for 300 messages"


def test_acks_whose_send_failed_are_sent_by_the_next_consumer() -> None:
    reaper = Reaper()
    with tempfile.TemporaryDirectory(prefix="chimeway-acks-") as root:
        server = PrivateRedis(Path(root), reaper)
        server.start()
        client = server.client()
        try:
            broker = _broker(client, "acks")
            _enqueue(broker, 3)
            consumer = broker.consume(QUEUE, prefetch=3, timeout=50)
            for message in _fetch(consumer, 3):
                consumer.ack(message)
            server.stop()
            with pytest.raises(ConnectionClosed):
                consumer.send_acks()
            assert len(broker.unsent_acks[QUEUE]) == 3, "kept, not dropped"
            server.start()
            replacement = broker.consume(QUEUE, prefetch=3, timeout=50)
            assert next(replacement) is None  # sends the kept acks (to an empty Redis: harmless), fetches nothing
            assert not broker.unsent_acks[QUEUE]
        finally:
            client.close()
            server.close()
            reaper.close()
