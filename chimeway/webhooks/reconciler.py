"""Reconcile: link orphans — events that arrived before their delivery committed — to deliveries.

An orphan is a ledger row with ``delivery_id`` NULL and ``needs_reconciliation`` true. The ledger is
append-only, so an orphan is never updated: linking it appends a ``reconciled`` event with the
idempotency key ``reconciled:<orphan id>`` and applies the orphan's own type to the delivery's
projection, in one transaction per batch, then broadcasts after commit. That key is also what
"already linked" means: the scan anti-joins on it, so linked orphans are never scanned again and
can never fill a batch, and two reconcilers racing on one orphan store one event (the second insert
hits the unique key and stores nothing, so it projects nothing either).

The scan is set-based: keyset-paginated batches over the partial orphan index, matched to the
deliveries by the same (tenant, provider, provider_message_id) key ingest uses. On PostgreSQL a batch
is one statement (scan, match, insert, projection update) that sends back only what suppression
entries and broadcasts need; SQLite runs the same steps as separate statements. Its cost follows the
orphans in the window, not the ledger. One call
walks the whole window once, oldest first, so orphans whose delivery never appears cannot starve
newer ones either.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import peewee

from chimeway import db as dbmod
from chimeway import telemetry
from chimeway.dispatch.binding import PERIODIC_OPTIONS, bind, run_periodic
from chimeway.dispatch.lanes import QUEUE
from chimeway.models import new_id
from chimeway.store import pubsub
from chimeway.store.pubsub import Broadcast
from chimeway.webhooks import feedback, ledger, projection, suppression_entries
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.webhooks")

#: The actor's name in Dramatiq (kept: messages already in queues name it).
ACTOR_NAME = "chimeway_reconcile_orphans"
#: Overlapping actor runs (duplicate messages, a slow run meeting the next tick) are skipped this long.
RUN_DEDUPE_SECONDS = 60
#: PostgreSQL advisory lock key of the reconcile actor ("chimeway-reconcile", 63 bits).
ADVISORY_LOCK_KEY = int.from_bytes(b"cw-recon", "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class ReconcileResult:
    scanned: int  #: orphans examined that were not linked yet
    linked: int  #: of which this run linked to their delivery


def reconcile(
    tenant_id: str | None = None,
    batch_size: int = 1000,
    *,
    runtime: Runtime,
    now: datetime | None = None,
) -> ReconcileResult:
    """Link every reconcilable orphan in the window, ``batch_size`` per transaction.

    One call walks the window once, oldest first: orphans not linked yet, received between
    CHIMEWAY_RECONCILE_MAX_AGE_MINUTES and CHIMEWAY_RECONCILE_GRACE_SECONDS ago, of ``tenant_id``
    when given. ``scanned`` counts those examined, ``linked`` those this call linked; an orphan whose
    delivery does not exist yet stays for a later call.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    settings, database = runtime.settings, runtime.database
    now = now or dbmod.now()
    newest = now - timedelta(seconds=settings.reconcile_grace_seconds)
    oldest = now - timedelta(minutes=settings.reconcile_max_age_minutes)
    scanned = linked = 0
    after: tuple[Any, str] | None = None
    # Each batch's broadcasts go out from one thread while the next batch runs in PostgreSQL, in
    # order, after their batch commits; the call returns once all of them are out.
    publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chimeway-reconcile-publish")

    def publish(broadcasts: list[Broadcast]) -> None:
        publisher.submit(pubsub.publish, broadcasts, runtime)

    try:
        with telemetry.span("reconcile", tenant_id=tenant_id) as report:
            while True:
                batch_scanned, batch_linked, after = _retrying(
                    lambda: _batch(database, tenant_id, batch_size, newest, oldest, after, now, publish)  # noqa: B023
                )
                scanned += batch_scanned
                linked += batch_linked
                if batch_scanned < batch_size:
                    break
            report.update(scanned=scanned, linked=linked)
    finally:
        publisher.shutdown(wait=True)
    logger.info("reconcile: linked %d of %d orphans", linked, scanned)
    return ReconcileResult(scanned=scanned, linked=linked)


#: SQLSTATEs after which a batch is simply run again: deadlock detected, serialization failure.
_RETRYABLE = frozenset({"40P01", "40001"})
#: Attempts per batch before such an error is raised to the caller.
BATCH_ATTEMPTS = 3


def _retrying(run: Any) -> Any:
    """Run one batch transaction, again if PostgreSQL aborted it for a deadlock with a concurrent
    writer (ingest or another reconciler touching the same deliveries): nothing of it was kept."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            return run()
        except peewee.DatabaseError as err:
            original = getattr(err, "orig", None) or err  # peewee keeps the driver's error here
            if getattr(original, "pgcode", None) not in _RETRYABLE or attempt == BATCH_ATTEMPTS:
                raise
            logger.warning("reconcile batch aborted by PostgreSQL (%s); running it again", original.pgcode)
    raise AssertionError("unreachable")


def not_linked_sql(orphan: str, database: peewee.Database | None = None) -> str:
    """SQL: the orphan row aliased ``orphan`` has no ``reconciled:<orphan id>`` event yet.

    Written as a scalar subquery compared with ``<>`` on purpose: the planner then walks the orphan
    index in batch order, probes the unique key once per orphan and stops at the batch size. As NOT
    EXISTS it becomes a hash anti-join over the whole ledger — O(events) instead of O(batch).
    """
    return (
        f"COALESCE((SELECT 1 FROM {ledger.keys_table(database)} r "
        f"WHERE r.idempotency_key = {ledger.reconciled_key_sql(orphan)} LIMIT 1), 0) <> 1"
    )


def _scan(
    database: peewee.Database,
    tenant_id: str | None,
    newest: datetime,
    oldest: datetime,
    after: tuple[Any, str] | None,
) -> tuple[list[str], list[Any]]:
    """WHERE terms and their parameters of one batch's orphan scan (the orphan aliased ``o``)."""
    where = ["o.needs_reconciliation", "o.received_at <= %s", "o.received_at >= %s"]
    params: list[Any] = [dbmod.to_db_time(newest, database), dbmod.to_db_time(oldest, database)]
    if tenant_id is not None:
        where.append("o.tenant_id = %s")
        params.append(tenant_id)
    if after is not None:
        where.append("(o.received_at, o.id) > (%s, %s)")  # a row comparison: an index range on both
        params += [after[0], after[1]]
    where.append(not_linked_sql("o", database))
    return where, params


def _pipeline_sql(database: peewee.Database, where: list[str]) -> str:
    """One PostgreSQL statement per batch: scan, match, append the ``reconciled`` events, project the
    winners; it returns the batch's size and last key, and per winner only what suppression entries
    and broadcasts need. No row list travels back and forth for the INSERT or the UPDATE.

    Each lookup is a LATERAL subquery with LIMIT 1, so it stays an index probe per orphan whatever
    the planner estimates for the batch (a keyset range is often estimated at one row, and a join
    planned on that estimate compares every pair).
    """
    return (
        "WITH o AS MATERIALIZED (SELECT o.id, o.received_at, o.tenant_id, o.type, o.provider, o.provider_message_id, "
        "o.webhook_event_id FROM chimeway_events o "
        f"WHERE {' AND '.join(where)} ORDER BY o.received_at, o.id LIMIT %s), "
        "ins AS ("
        + ledger.reconciled_insert_sql(
            database,
            source="o JOIN LATERAL (SELECT d.id FROM chimeway_deliveries d WHERE d.provider = o.provider "
            "AND d.provider_message_id = o.provider_message_id AND d.tenant_id = o.tenant_id LIMIT 1) d ON true",
            new_id="gen_random_uuid()",
            delivery_id="d.id",
            returning="delivery_id, metadata",
        )
        + "), "
        # Only the winners: an orphan another reconciler linked first stored nothing, so projects nothing.
        "won AS MATERIALIZED (SELECT o.tenant_id, ins.delivery_id, o.type, o.occurred_at, o.reject_reason, "
        "o.provider, d.recipient, d.channel FROM ins "
        "JOIN LATERAL (SELECT * FROM chimeway_events o WHERE o.id = CAST(ins.metadata ->> 'orphan_id' AS uuid) "
        "LIMIT 1) o ON true "
        "LEFT JOIN LATERAL (SELECT d.recipient, d.channel FROM chimeway_deliveries d WHERE d.id = ins.delivery_id "
        f"AND {suppression_entries.suppressing_sql('o')} LIMIT 1) d ON true), "
        f"{projection.projecting_ctes('won s')}, "
        "h AS (SELECT count(*) AS n FROM o), "
        "l AS (SELECT received_at, CAST(id AS text) AS id FROM o ORDER BY received_at DESC, o.id DESC LIMIT 1) "
        "SELECT h.n, l.received_at, l.id, w.tenant_id, CAST(w.delivery_id AS text), w.type, w.occurred_at, "
        "w.reject_reason, w.channel, w.recipient, w.provider FROM h LEFT JOIN l ON true LEFT JOIN won w ON true"
    )


def _pipeline(
    database: peewee.Database,
    where: list[str],
    params: list[Any],
    now: datetime,
    publish: feedback.Publish,
) -> tuple[int, int, tuple[Any, str] | None]:
    at = dbmod.to_db_time(now, database)
    with dbmod.transaction(database):
        rows = dbmod.execute(_pipeline_sql(database, where), [*params, at, at], db=database).fetchall()
        won = [
            feedback.Feedback(row[3], row[4], row[9], row[8], row[5], row[7], row[6], row[10])
            for row in rows
            if row[4] is not None
        ]
        feedback.announce(database, won, publish)
    scanned = rows[0][0] if rows else 0
    return scanned, len(won), ((rows[0][1], rows[0][2]) if scanned else None)


def _batch(
    database: peewee.Database,
    tenant_id: str | None,
    limit: int,
    newest: datetime,
    oldest: datetime,
    after: tuple[Any, str] | None,
    now: datetime,
    publish: feedback.Publish,
) -> tuple[int, int, tuple[Any, str] | None]:
    where, params = _scan(database, tenant_id, newest, oldest, after)
    if dbmod.is_postgres(database):
        return _pipeline(database, where, [*params, limit], now, publish)
    with dbmod.transaction(database):
        rows = dbmod.execute(
            # Ids as text: no uuid objects to build and turn back into strings, row after row.
            "SELECT CAST(o.id AS text), o.received_at, o.tenant_id, o.type, o.reject_reason, o.provider, "
            "o.provider_message_id, o.occurred_at, CAST(d.id AS text), d.recipient, d.channel, d.lock_version "
            "FROM chimeway_events o LEFT JOIN chimeway_deliveries d ON d.tenant_id = o.tenant_id "
            "AND d.provider = o.provider AND d.provider_message_id = o.provider_message_id "
            f"WHERE {' AND '.join(where)} ORDER BY o.received_at, o.id LIMIT %s",
            [*params, limit],
            db=database,
        ).fetchall()
        if not rows:
            return 0, 0, after
        matched = [row for row in rows if row[8] is not None]
        links = [(new_id(), row[0], row[8]) for row in matched]
        stored = ledger.append_reconciled(database, links, now)
        won = [row for row, link in zip(matched, links) if link[0] in stored]
        feedback.apply(
            database,
            [
                feedback.Feedback(
                    row[2], row[8], row[9], row[10], row[3], row[4], dbmod.from_db_time(row[7]), row[5], row[11]
                )  # type: ignore[arg-type]
                for row in won
            ],
            publish,
        )
    last = rows[-1]
    return len(rows), len(won), (last[1], last[0])


# -- the reconcile_orphans actor ----------------------------------------------------------------------


def declare(broker: dramatiq.Broker, runtime: Runtime) -> dict[str, dramatiq.Actor]:
    """The ``reconcile_orphans`` actor on ``broker``, bound to ``runtime``; the scheduler sends it.
    A failed run is logged and completed (``binding.run_periodic``): the next tick runs it again."""

    def periodic_run(runtime: Runtime, tenant_id: str | None = None) -> None:
        run_periodic("reconcile", lambda: reconcile_orphans(runtime, tenant_id))

    return {"reconcile_orphans": bind(broker, runtime, periodic_run, actor_name=ACTOR_NAME, queue=QUEUE, order=0,
                                      options=PERIODIC_OPTIONS)}


def reconcile_orphans(runtime: Runtime, tenant_id: str | None = None) -> ReconcileResult | None:
    """What one ``reconcile_orphans`` message does: :func:`reconcile`, unless another run holds the
    lock (then None).

    Overlapping runs are skipped twice over: a ``SET NX`` key for 60 s (in-memory without Redis),
    and on PostgreSQL a session advisory lock held for the whole run. SQLite has no advisory locks:
    its IMMEDIATE write transactions serialize the batches. Either way the ``reconciled:<orphan id>``
    key is what guarantees one event per orphan; the locks only spare the duplicate work.
    """
    scope = tenant_id if tenant_id is not None else "*"
    if not _claim_run(runtime, scope):
        logger.info("reconcile for %s skipped: another run started less than %d s ago", scope, RUN_DEDUPE_SECONDS)
        return None
    database = runtime.database
    if not dbmod.is_postgres(database):
        return reconcile(tenant_id, runtime=runtime)
    key = advisory_lock_key(scope)
    if not dbmod.execute("SELECT pg_try_advisory_lock(%s)", (key,), db=database).fetchone()[0]:
        logger.info("reconcile for %s skipped: another reconciler holds the advisory lock", scope)
        return None
    try:
        return reconcile(tenant_id, runtime=runtime)
    finally:
        dbmod.execute("SELECT pg_advisory_unlock(%s)", (key,), db=database)


def advisory_lock_key(scope: str) -> int:
    """The advisory lock a reconcile run of ``scope`` (a tenant, or "*" for all) holds."""
    return ADVISORY_LOCK_KEY ^ (uuid.uuid5(uuid.NAMESPACE_URL, scope).int & 0xFFFF_FFFF)


def _claim_run(runtime: Runtime, scope: str) -> bool:
    return runtime.setnx.first(f"{runtime.settings.redis_namespace}:reconcile:run:{scope}", RUN_DEDUPE_SECONDS)
