"""The sweep: re-enqueue committed, non-terminal deliveries whose message was lost.

A message can vanish between the database and a worker: Redis restarted without persistence, the
process crashed between commit and enqueue, a worker died and its message was dead-lettered. The
row is the source of truth, so a periodic sweep finds rows nobody is working on and sends their
message again. Which rows count as lost (``stall`` = CHIMEWAY_SWEEP_STALL_SECONDS):

==========  ===================================================================================
pending     ready, last changed more than ``stall`` ago
failed      ready, its retry (``next_attempt_at``) due more than ``stall`` ago
dispatched  its lease (``lease_until``) expired: the worker that claimed it is gone
deferred    pending or failed, deferred until ``next_eligible_at`` more than ``stall`` ago
==========  ===================================================================================

and in every case no message was enqueued in the last ``stall`` seconds (``enqueued_at``), so a row
whose re-sent message is still in flight is not sent again every minute. A duplicate message is
harmless anyway: the claim lets one worker win and the others acknowledge a no-op.

Rows are taken in batches, each in its own transaction: on PostgreSQL under a transaction-level
advisory lock (a second sweep finds it taken and stops) and ``FOR UPDATE SKIP LOCKED``; on SQLite
the IMMEDIATE transaction serializes sweeps. Messages are sent inside the transaction that marks
the rows, so the marks and the messages go together; a worker that gets a message first waits for
the row lock before it can claim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from chimeway import db, telemetry
from chimeway.dispatch.enqueue import enqueue
from chimeway.states import Orchestration, Status

if TYPE_CHECKING:
    from chimeway.runtime import Runtime

__all__ = ["SWEEP_LOCK_KEY", "SweepResult", "count_lost", "sweep"]

logger = logging.getLogger("chimeway.dispatch")

#: The PostgreSQL advisory lock a sweep holds while it works: the bytes of "cw:sweep" as a bigint.
SWEEP_LOCK_KEY = int.from_bytes(b"cw:sweep", "big")

#: The rows the sweep re-enqueues (the table in the module docstring); ``chimeway status`` counts
#: its "stalled" deliveries with the same condition. Parameters: :func:`_lost_params`.
_LOST_WHERE = """
status IN ('pending', 'failed', 'dispatched')
  AND (enqueued_at IS NULL OR enqueued_at < %s)
  AND (
        (orchestration_state = 'deferred' AND status IN ('pending', 'failed')
            AND COALESCE(next_eligible_at, updated_at) < %s)
     OR (orchestration_state = 'ready' AND status = 'pending' AND updated_at < %s)
     OR (orchestration_state = 'ready' AND status = 'failed' AND COALESCE(next_attempt_at, updated_at) < %s)
     OR (status = 'dispatched' AND COALESCE(lease_until, updated_at) < %s)
  )
"""

_LOST = (
    "SELECT id, status, orchestration_state FROM chimeway_deliveries WHERE"
    + _LOST_WHERE
    + """  {tenant}
ORDER BY updated_at
LIMIT %s
{lock}
"""
)


def count_lost(runtime: Runtime) -> int:
    """How many deliveries a sweep starting now would re-enqueue (``chimeway status``'s "stalled")."""
    database = runtime.database
    params = _lost_params(database, timedelta(seconds=runtime.settings.sweep_stall_seconds))
    return db.execute(f"SELECT COUNT(*) FROM chimeway_deliveries WHERE {_LOST_WHERE}", params, database).fetchone()[0]


def _lost_params(database: Any, stall: timedelta) -> list[Any]:
    now = db.now()
    cutoff = db.to_db_time(now - stall, database)
    return [cutoff, cutoff, cutoff, cutoff, db.to_db_time(now, database)]


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


def sweep(batch_size: int = 500, *, tenant_id: str | None = None) -> SweepResult:
    """Re-enqueue every lost delivery (of ``tenant_id``, or all), ``batch_size`` rows per transaction."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    from chimeway.runtime import current

    runtime = current()
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
        params = _lost_params(database, stall)
        params += [tenant_id, batch_size] if tenant_id is not None else [batch_size]
        query = _LOST.format(
            tenant="AND tenant_id = %s" if tenant_id is not None else "",
            lock="FOR UPDATE SKIP LOCKED" if postgres else "",
        )
        rows = db.execute(query, params, database).fetchall()
        picked = []
        for delivery_id, status, orchestration in rows:
            # enqueue() marks enqueued_at inside this transaction, so the mark commits with the batch
            if enqueue(str(delivery_id), dedupe=False, runtime=runtime):
                picked.append((str(delivery_id), _kind(status, orchestration)))
        return picked


def _try_lock(database: Any) -> bool:
    """Take the sweep's advisory lock until this transaction ends, unless another sweep has it."""
    return bool(db.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,), database).fetchone()[0])


def _kind(status: str, orchestration: str) -> str:
    return "deferred" if orchestration == Orchestration.DEFERRED else Status(status).value
