"""Dramatiq middleware of the dispatch layer: database connections, and the ExhaustionGuard.

Both sit just before Dramatiq's ``Retries`` in the broker's list. Dramatiq runs ``before_*`` hooks
in list order and ``after_*`` hooks in reverse, so after a message the order is: ``Retries`` decides
(retry or dead-letter) → ``ExhaustionGuard`` may overrule a dead letter → ``DatabaseConnections``
hands the connection back last, after the guard has written.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import peewee
from dramatiq.middleware import Middleware, Retries
from playhouse.pool import _PooledPostgresqlDatabase

from chimeway.errors import ChimewayError

logger = logging.getLogger("chimeway.dispatch")

#: The actor name the guard watches (a Chimeway-owned name, so a shared broker has no clash).
DELIVER_ACTOR = "chimeway_deliver"


class AttemptsExhausted(ChimewayError):
    """The deliver actor's final attempt failed transiently. Declared in the actor's ``throws``, so
    ``Retries`` does not retry it; the :class:`ExhaustionGuard` converges the delivery."""

    def __init__(self, delivery_id: str, attempt: int, max_attempts: int) -> None:
        super().__init__(f"delivery {delivery_id}: final attempt {attempt}/{max_attempts} failed")
        self.delivery_id = delivery_id


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
        database.connect(reuse_if_open=True)

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
    """The final-attempt guard: a deliver message that would be dead-lettered converges instead.

    Final means the actor's durable attempt count reached ``max_attempts`` (it raises
    :class:`AttemptsExhausted`) or Dramatiq's own retry count ran out (``Retries`` failed the
    message). Either way the delivery becomes cancelled(retries_exhausted) and the message is
    completed, not dead-lettered. If that write fails, the message stays failed (dead-lettered) and
    a CRITICAL log names the delivery; the sweep converges it later. Nothing is left silently.
    """

    @staticmethod
    def last_message(broker: Any, message: Any) -> bool:
        """Whether Dramatiq dead-letters ``message`` if it fails now (read before ``Retries`` counts it)."""
        if message is None:
            return False
        max_retries = message.options.get("max_retries")
        if max_retries is None:
            max_retries = broker.get_actor(message.actor_name).options.get("max_retries")
        if max_retries is None:
            retries_mw = next((m for m in broker.middleware if isinstance(m, Retries)), None)
            max_retries = retries_mw.max_retries if retries_mw else None
        return max_retries is not None and message.options.get("retries", 0) >= max_retries

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is None or message.actor_name != DELIVER_ACTOR:
            return
        if not (message.failed or isinstance(exception, AttemptsExhausted)):
            return  # Retries scheduled a retry: this was not the final message
        from chimeway import deliveries

        delivery_id = message.args[0] if message.args else None
        try:
            converged = deliveries.exhaust(delivery_id)
            delivery = None if converged else deliveries.find(delivery_id)
        except Exception:
            message.fail()
            logger.critical(
                "delivery %s: its final attempt failed and writing cancelled(retries_exhausted) failed; "
                "the message is dead-lettered and the sweep will converge the delivery", delivery_id,
                exc_info=True,
            )
            return
        if converged:
            logger.warning("delivery %s: cancelled(retries_exhausted) after its final attempt", delivery_id)
        if converged or delivery is None or delivery.is_terminal:
            message.failed = False  # completed: there is nothing left to retry
            return
        message.fail()
        logger.critical(
            "delivery %s: its final message failed while the delivery is %s; the message is "
            "dead-lettered and the sweep will converge the delivery", delivery_id, delivery.status,
        )
