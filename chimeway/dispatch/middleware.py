"""Dramatiq middleware of the dispatch layer: database connections, and the ExhaustionGuard.

Both sit just before Dramatiq's ``Retries`` in the broker's list. Dramatiq runs ``before_*`` hooks
in list order and ``after_*`` hooks in reverse, so after a message the order is: ``Retries`` decides
(retry or give up) → ``ExhaustionGuard`` decides what a message given up on becomes →
``DatabaseConnections`` hands the connection back last, after the guard has written.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import peewee
from dramatiq.middleware import Middleware
from playhouse.pool import _PooledPostgresqlDatabase

from chimeway import db
from chimeway.dispatch.enqueue import ROUTE_OPTION, enqueue
from chimeway.dispatch.lanes import DELIVER_ACTORS
from chimeway.store import deliveries
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.dispatch")

class DatabaseConnections(Middleware):
    """One database connection per message: connect before, roll back anything leaked and hand the
    connection back after, so N worker threads never hold more than N connections. After a fork,
    connections inherited from the parent are forgotten (never closed: they are the parent's)."""

    def __init__(self, database: peewee.Database) -> None:
        self.database = database

    def after_process_boot(self, broker: Any) -> None:
        self.database.dispose()

    def before_process_message(self, broker: Any, message: Any) -> None:
        database = self.database
        if isinstance(database, _PooledPostgresqlDatabase) and "_is_closed" not in vars(database):
            database._is_closed = functools.partial(_closed_without_round_trip, database)
        try:
            database.connect(reuse_if_open=True)
        except peewee.OperationalError:
            # Unreachable: the message's first statement connects again and fails, and Dramatiq
            # retries it (no attempt spent) with one ERROR. Raising here would add a CRITICAL
            # "Unexpected failure in before_process_message" and run the message anyway.
            logger.debug("database unreachable before a message; its first statement will retry", exc_info=True)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        self._release()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._release()

    def before_worker_thread_shutdown(self, broker: Any, thread: Any) -> None:
        self._release()

    def _release(self) -> None:
        database = self.database
        if database.in_transaction():
            logger.error("a transaction was left open by a message; rolling it back")
            while database.in_transaction():
                database.pop_transaction()
            database.rollback()
        if not database.is_closed():
            database.close()


def _closed_without_round_trip(database: Any, conn: Any) -> bool:
    """The pool's check-out test without its ``SELECT 1`` (one round trip per message otherwise): the
    driver's own view of the connection. A connection the server dropped while it sat in the pool
    then fails its message's first statement; the driver marks it closed, the pool discards it on
    the next check-out, and Dramatiq retries the message (no attempt was spent: the load comes first).
    Installed on the worker's pool only (by :class:`DatabaseConnections`, before a message)."""
    if conn.closed:
        return True
    adapter = database._adapter
    status = adapter.txn_status(conn)
    if status == adapter.txn_unknown:
        return True
    if status != adapter.txn_idle:  # left in a transaction: roll back, as the pool's own check does
        try:
            adapter.rollback(conn)
        except Exception:
            return True
    return False


class ExhaustionGuard(Middleware):
    """What happens to a deliver message Dramatiq gives up on (its retries, which only failures that
    spend no attempt use, ran out): never a cancelled delivery that still has attempts.

    - the attempt budget is spent (a worker died in the last attempt, or converging kept failing):
      cancelled(retries_exhausted), and the message is completed;
    - the delivery is terminal or gone: the message is completed;
    - attempts remain: a fresh message is enqueued (due no earlier than the row's next attempt or
      lease, and at the slowest backoff), the message is completed, and a WARNING says so.

    If that fails too (the database or Redis still down), the message is dead-lettered and a CRITICAL
    log names the delivery: the sweep re-enqueues it. Nothing is left silently.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  #: replaced when the same broker is wired to a new runtime

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is None or not message.failed:
            return  # succeeded, or Retries scheduled a retry
        if message.actor_name not in DELIVER_ACTORS:
            return
        delivery_id = message.args[0] if message.args else None
        try:
            if deliveries.exhaust(delivery_id):
                logger.warning("delivery %s: its attempt budget is spent; cancelled(retries_exhausted)", delivery_id)
                delivery = None
            else:
                delivery = deliveries.find(delivery_id)
            if delivery is not None and not delivery.is_terminal:
                now = db.now()
                due = max([now, *(t for t in (delivery.next_attempt_at, delivery.lease_until) if t)])
                delay_ms = self.runtime.settings.backoff_max_ms + int((due - now).total_seconds() * 1000)
                enqueue(delivery_id, delay_ms=delay_ms, dedupe=False, route=message.options.get(ROUTE_OPTION),
                        runtime=self.runtime)
                logger.warning(
                    "delivery %s: Dramatiq gave up on message %s after %s retries that spent no attempt "
                    "(%d/%d attempts spent); re-enqueued as a fresh message in %d ms", delivery_id,
                    message.message_id, message.options.get("retries"), delivery.attempt_count,
                    delivery.max_attempts, delay_ms,
                )
        except Exception:
            logger.critical(
                "delivery %s: Dramatiq gave up on its message and neither converging nor re-enqueueing the "
                "delivery worked; the message is dead-lettered and the sweep will re-enqueue the delivery",
                delivery_id, exc_info=True,
            )
            return
        message.failed = False  # completed: converged, or carried on by the fresh message
