"""The sweep: re-enqueue committed, non-terminal deliveries whose message was lost.

A message can vanish between the database and a worker: Redis restarted without persistence, the
process crashed between commit and enqueue, a worker died and its message was dead-lettered. The
row is the source of truth, so a periodic sweep finds rows nobody is working on and sends their
message again. Which rows count as lost (``stall`` = CHIMEWAY_SWEEP_STALL_SECONDS):

==========  ===================================================================================
pending     ready, last changed more than ``stall`` ago
failed      ready, its retry (``next_attempt_at``) due more than ``stall`` ago
dispatched  its lease (``lease_until``) expired: the worker that claimed it is gone
deferred    pending or failed, deferred until ``next_eligible_at`` more than ``stall`` ago; or a
            scheduled send (``send_at``) due within the next ``stall``: it is re-enqueued delayed
            to its time, so a Redis loss does not make it late (docs/architecture.md §9)
==========  ===================================================================================

and in every case no message was enqueued in the last ``stall`` seconds (``enqueued_at``), so a row
whose re-sent message is still in flight is not sent again every minute. A duplicate message is
harmless anyway: the claim lets one worker win and the others acknowledge a no-op.

Rows are taken in batches, each in its own transaction: on PostgreSQL under a transaction-level
advisory lock (a second sweep finds it taken and stops) and ``FOR UPDATE SKIP LOCKED``; on SQLite
the IMMEDIATE transaction serializes sweeps. Messages are sent inside the transaction that marks
the rows, so the marks and the messages go together; a worker that gets a message first waits for
the row lock before it can claim. A batch is marked with one UPDATE and its messages go out in one
Redis pipeline (``enqueue_many``), each into its delivery's own lane: after a Redis loss the sweep
re-sends tens of thousands of messages, and one round trip each would make recovery take minutes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from chimeway import db, telemetry
from chimeway.dispatch.enqueue import enqueue_many
from chimeway.dispatch.send import delay_until
from chimeway.states import Orchestration, Status
from chimeway.store import deliveries
from chimeway.wiring.runtime_type import Runtime

__all__ = ["SWEEP_LOCK_KEY", "SweepResult", "sweep"]

logger = logging.getLogger("chimeway.dispatch")

#: The PostgreSQL advisory lock a sweep holds while it works: the bytes of "cw:sweep" as a bigint.
SWEEP_LOCK_KEY = int.from_bytes(b"cw:sweep", "big")

#: Placeholders: the lost condition's, then the tenant's, then the limit.
_PICK = """
SELECT id, status, orchestration_state, next_eligible_at, priority, adapter FROM chimeway_deliveries
WHERE {lost}
  {tenant}
ORDER BY updated_at
LIMIT %s
{lock}
"""


@dataclass(frozen=True)
class SweepResult:
    """What one sweep re-enqueued, by kind of lost delivery."""

    pending: int = 0
    failed: int = 0
    dispatched: int = 0
    deferred: int = 0
    #: True when another sweep held the lock, so this one did nothing.
    skipped: bool = False
    delivery_ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def reenqueued(self) -> int:
        return self.pending + self.failed + self.dispatched + self.deferred

    def by_kind(self) -> dict[str, int]:
        return {
            "pending": self.pending,
            "failed": self.failed,
            "dispatched": self.dispatched,
            "deferred": self.deferred,
        }


def sweep(batch_size: int = 500, *, tenant_id: str | None = None, runtime: Runtime) -> SweepResult:
    """Re-enqueue every lost delivery (of ``tenant_id``, or all), ``batch_size`` rows per transaction."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    stall = timedelta(seconds=runtime.settings.sweep_stall_seconds)
    counts = dict.fromkeys(("pending", "failed", "dispatched", "deferred"), 0)
    ids: list[str] = []
    skipped = False
    with telemetry.span("sweep", tenant_id=tenant_id) as report:
        while True:
            batch = _sweep_batch(runtime, batch_size, stall, tenant_id)
            if batch is None:
                skipped = not ids
                break
            for delivery_id, kind in batch:
                counts[kind] += 1
                ids.append(delivery_id)
            if len(batch) < batch_size:
                break
        report.update(reenqueued=len(ids), scanned=len(ids))
    result = SweepResult(**counts, skipped=skipped, delivery_ids=tuple(ids))
    if skipped:
        logger.info("sweep: skipped, another sweep holds the lock")
    else:  # every run says what it did, "re-enqueued 0" included: a silent worker looks stuck
        kinds = ", ".join(f"{kind} {n}" for kind, n in result.by_kind().items())
        logger.info("sweep: re-enqueued %d (%s)", result.reenqueued, kinds)
    return result


def _sweep_batch(
    runtime: Runtime, batch_size: int, stall: timedelta, tenant_id: str | None
) -> list[tuple[str, str]] | None:
    """One transaction: lock, pick lost rows, send their messages. None when another sweep holds the lock."""
    database = runtime.database
    postgres = db.is_postgres(database)
    with db.transaction(database):
        if postgres and not _try_lock(database):
            return None
        lost, params = deliveries.lost(db.now(), stall, database)
        params += [tenant_id, batch_size] if tenant_id is not None else [batch_size]
        query = _PICK.format(
            lost=lost,
            tenant="AND tenant_id = %s" if tenant_id is not None else "",
            lock="FOR UPDATE SKIP LOCKED" if postgres else "",
        )
        rows = db.execute(query, params, database).fetchall()
        # enqueue_many marks enqueued_at inside this transaction, so the marks commit with the batch
        enqueue_many([
            (str(delivery_id), priority, delay_until(_due(orchestration, eligible)), adapter)
            for delivery_id, _, orchestration, eligible, priority, adapter in rows
        ], runtime=runtime)
        return [(str(row[0]), _kind(row[1], row[2])) for row in rows]


def _due(orchestration: str, eligible: Any) -> Any:
    """When a deferred delivery's message is due (a scheduled one is taken ahead of its time)."""
    return db.from_db_time(eligible) if orchestration == Orchestration.DEFERRED and eligible else None


def _try_lock(database: Any) -> bool:
    """Take the sweep's advisory lock until this transaction ends, unless another sweep has it."""
    return bool(db.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,), database).fetchone()[0])


def _kind(status: str, orchestration: str) -> str:
    return "deferred" if orchestration == Orchestration.DEFERRED else Status(status).value
