"""Broker wiring: middleware order, actors per runtime, no global broker, Redis dedupe, and the
database-connection middleware."""

from __future__ import annotations

import logging

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries

import chimeway
from chimeway.dispatch.actors import DRAMATIQ_MAX_RETRIES, QUEUE
from chimeway.dispatch.enqueue import DEDUPE_WINDOW_MS, enqueue
from chimeway.dispatch.middleware import DatabaseConnections, ExhaustionGuard
from chimeway.models import Delivery
from chimeway.wiring import runtime as runtime_mod


def test_given_a_configured_runtime_then_its_actors_are_declared_on_its_broker_under_their_names(runtime):
    names = {key: actor.actor_name for key, actor in runtime.actors.items()}
    assert names == {
        "deliver": "chimeway_deliver", "deliver_high": "chimeway_deliver_high", "deliver_bulk": "chimeway_deliver_bulk",
        "sweep_actor": "chimeway_sweep", "reconcile_orphans": "chimeway_reconcile_orphans",
    }
    assert all(actor.broker is runtime.broker for actor in runtime.actors.values())


def test_given_a_broker_then_the_guard_and_connections_run_inside_retries_once_each(database_url):
    broker = StubBroker()
    broker.emit_after("process_boot")
    for _ in range(2):  # configuring twice on one broker adds nothing twice
        latest = runtime_mod.configure(database_url=database_url, redis_url="", environ={}, broker=broker)
    try:
        # and what stays on the broker serves the latest runtime, not the closed one
        [guard] = [m for m in broker.middleware if isinstance(m, ExhaustionGuard)]
        assert guard.runtime is latest
        kinds = [type(m) for m in broker.middleware]
        assert kinds.count(DatabaseConnections) == kinds.count(ExhaustionGuard) == kinds.count(CurrentMessage) == 1
        assert kinds.index(DatabaseConnections) < kinds.index(ExhaustionGuard) < kinds.index(Retries)
    finally:
        runtime_mod.reset()


def test_given_a_runtime_then_dramatiq_retries_deliver_messages_on_a_budget_of_its_own(runtime, create):
    # Dramatiq retries only failures that spend no attempt; a message carries no budget of the delivery's.
    options = runtime.actors["deliver"].options
    assert options["max_retries"] == DRAMATIQ_MAX_RETRIES >= 10
    assert "throws" not in options
    delivery = create(max_attempts=2)
    enqueue(delivery.id, runtime=runtime)
    message = dramatiq.Message.decode(runtime.broker.queues[QUEUE].get_nowait())
    assert message.args == (delivery.id,) and "max_retries" not in message.options


def test_given_an_application_global_broker_when_chimeway_is_configured_then_it_is_left_alone(database_url):
    previous = dramatiq.broker.global_broker
    application_broker = StubBroker()
    dramatiq.set_broker(application_broker)
    try:
        configured = runtime_mod.configure(database_url=database_url, redis_url="", environ={})
        assert dramatiq.get_broker() is application_broker
        assert configured.broker is not application_broker
    finally:
        runtime_mod.reset()
        dramatiq.set_broker(previous)


@pytest.mark.redis
def test_given_redis_when_a_delivery_is_enqueued_twice_within_60_s_then_one_message_is_sent(
    sqlite_url, redis_url, redis_namespace
):
    from chimeway.store.migrator import migrate

    configured = runtime_mod.configure(database_url=sqlite_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                       default_adapter="fake", environ={})
    try:
        migrate(configured.database)
        with configured.database.atomic():
            sent = chimeway.send("email", "ann@example.com")
            assert configured.redis.hlen(f"{redis_namespace}:{QUEUE}.msgs") == 0
        assert enqueue(sent.id, runtime=configured) is False
        assert configured.redis.hlen(f"{redis_namespace}:{QUEUE}.msgs") == 1
        ttl = configured.redis.pttl(f"{redis_namespace}:dedupe:deliver:{sent.id}")
        assert 0 < ttl <= DEDUPE_WINDOW_MS
        assert enqueue(sent.id, dedupe=False, runtime=configured) is True
        assert configured.redis.hlen(f"{redis_namespace}:{QUEUE}.msgs") == 2
    finally:
        runtime_mod.reset()


def test_given_a_message_left_a_transaction_open_then_the_connection_middleware_rolls_it_back(runtime, create, caplog):
    middleware = next(m for m in runtime.broker.middleware if isinstance(m, DatabaseConnections))
    delivery = create()
    middleware.before_process_message(runtime.broker, None)
    leaked = runtime.database.atomic()
    leaked.__enter__()
    Delivery.update(recipient="changed@example.com").where(Delivery.id == delivery.id).execute()
    with caplog.at_level(logging.ERROR, logger="chimeway"):
        middleware.after_process_message(runtime.broker, None)
    assert not runtime.database.in_transaction() and runtime.database.is_closed()
    assert chimeway.get_delivery(delivery.id).recipient == "ann@example.com"
    assert any("left open" in r.getMessage() for r in caplog.records)


def test_given_postgresql_when_a_message_checks_out_a_pooled_connection_then_no_ping_round_trip(
    pg_url, monkeypatch
):
    from chimeway.db import connect
    from chimeway.wiring.config import load_settings

    database = connect(load_settings(environ={}, database_url=pg_url))
    middleware = DatabaseConnections(database)
    try:
        database.connect()
        first = database.connection()
        database.close()  # back to the pool, idle
        pings = []  # peewee's own check-out test sends SELECT 1 from here
        monkeypatch.setattr(database._adapter, "is_connection_closed", lambda conn: pings.append(conn))

        middleware.before_process_message(None, None)
        assert database.connection() is first  # reused, and the check-out sent nothing
        middleware.after_process_message(None, None)

        first.cursor().execute("BEGIN")  # a connection parked inside a transaction is rolled back
        middleware.before_process_message(None, None)
        assert database.connection() is first and not database.in_transaction()
        assert first.get_transaction_status() == 0  # idle
        middleware.after_process_message(None, None)

        first.close()  # a connection the driver knows is closed is discarded
        middleware.before_process_message(None, None)
        assert database.connection() is not first
        database.execute_sql("SELECT 1")
        middleware.after_process_message(None, None)
        assert pings == []
    finally:
        database.close_all()
