"""The sweep re-enqueues each kind of lost delivery once, and leaves healthy and terminal ones alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chimeway import db, telemetry
from chimeway.api import sweep
from chimeway.dispatch.sweep import SweepResult
from chimeway.models import Delivery
from chimeway.states import Orchestration, Reason, Status

#: Older than the default stall threshold (120 s).
STALE = 600
#: Younger than it.
FRESH = 30


def test_a_pending_delivery_never_enqueued_is_re_enqueued_once_stalled(lost, queued) -> None:
    # Given a committed pending row whose after-commit enqueue never happened
    delivery = lost(status=Status.PENDING, updated=STALE, enqueued=None)
    # When the sweep runs
    result = sweep()
    # Then its message is sent and the row records when
    assert result == SweepResult(pending=1, delivery_ids=(delivery.id,))
    assert queued() == [delivery.id]
    enqueued = Delivery.get_by_id(delivery.id).enqueued_at
    assert enqueued is not None and db.now() - enqueued < timedelta(seconds=30)


def test_a_pending_delivery_whose_message_went_missing_is_re_enqueued(lost, queued) -> None:
    delivery = lost(status=Status.PENDING, updated=STALE, enqueued=STALE)
    assert sweep().pending == 1
    assert queued() == [delivery.id]


def test_a_pending_delivery_younger_than_the_stall_threshold_is_left_alone(lost, queued) -> None:
    lost(status=Status.PENDING, updated=FRESH, enqueued=None)
    lost(status=Status.PENDING, updated=STALE, enqueued=FRESH)
    assert sweep() == SweepResult()
    assert queued() == []


def test_a_failed_delivery_whose_retry_is_overdue_is_re_enqueued(lost, queued) -> None:
    delivery = lost(status=Status.FAILED, attempt_count=1, next_attempt=STALE, enqueued=3600)
    lost(status=Status.FAILED, attempt_count=1, next_attempt=FRESH, enqueued=3600)  # due, within slack
    lost(status=Status.FAILED, attempt_count=1, next_attempt=-600, enqueued=3600)  # due in the future
    assert sweep() == SweepResult(failed=1, delivery_ids=(delivery.id,))
    assert queued() == [delivery.id]


def test_a_dispatched_delivery_whose_lease_expired_is_re_enqueued(lost, queued) -> None:
    crashed = lost(status=Status.DISPATCHED, attempt_count=1, lease=1, enqueued=STALE)
    lost(status=Status.DISPATCHED, attempt_count=1, lease=-300, enqueued=STALE)  # a worker is on it
    assert sweep() == SweepResult(dispatched=1, delivery_ids=(crashed.id,))
    assert queued() == [crashed.id]


def test_a_deferred_delivery_is_re_enqueued_once_it_is_overdue(lost, queued) -> None:
    overdue = lost(orchestration_state=Orchestration.DEFERRED, next_eligible=STALE, enqueued=3600)
    lost(orchestration_state=Orchestration.DEFERRED, next_eligible=-3600, enqueued=3600)  # quiet hours
    lost(orchestration_state=Orchestration.DEFERRED, next_eligible=FRESH, enqueued=3600)  # message due now
    assert sweep() == SweepResult(deferred=1, delivery_ids=(overdue.id,))
    assert queued() == [overdue.id]


def test_a_failed_delivery_deferred_by_policy_counts_as_deferred(lost, queued) -> None:
    delivery = lost(
        status=Status.FAILED,
        orchestration_state=Orchestration.DEFERRED,
        next_eligible=STALE,
        next_attempt=3600,
        enqueued=3600,
    )
    assert sweep() == SweepResult(deferred=1, delivery_ids=(delivery.id,))
    assert queued() == [delivery.id]


def test_a_failed_delivery_whose_exhaustion_was_never_written_is_re_enqueued_and_converges(
    lost, configured
) -> None:
    # Given the final attempt failed and the ExhaustionGuard could not write retries_exhausted
    from chimeway.testing import drain, start_worker

    delivery = lost(status=Status.FAILED, attempt_count=5, max_attempts=5, next_attempt=None, updated=STALE)
    # When the sweep re-enqueues it and a worker takes the message
    assert sweep().failed == 1
    with start_worker(configured):
        assert drain(configured) == []
    # Then it converges to cancelled(retries_exhausted) without another adapter call
    row = Delivery.get_by_id(delivery.id)
    assert (row.status, row.reason, row.attempt_count) == ("cancelled", "retries_exhausted", 5)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Status.SUCCEEDED, None),
        (Status.SUPPRESSED, Reason.RECIPIENT_SUPPRESSED),
        (Status.CANCELLED, Reason.RETRIES_EXHAUSTED),
    ],
)
def test_a_terminal_delivery_is_never_re_enqueued_however_old(lost, queued, status, reason) -> None:
    lost(
        status=status,
        reason=reason,
        updated=86_400,
        enqueued=None,
        lease=86_400,
        next_attempt=86_400,
    )
    assert sweep() == SweepResult()
    assert queued() == []


def test_a_second_sweep_within_the_stall_window_does_not_enqueue_the_same_row_again(lost, queued) -> None:
    # Given a lost delivery the sweep already re-enqueued, whose message is still in flight
    delivery = lost(status=Status.PENDING, updated=STALE, enqueued=None)
    assert sweep().reenqueued == 1
    # When the next sweeps run within the stall window, Then they leave it alone
    assert sweep() == SweepResult()
    assert sweep() == SweepResult()
    assert queued() == [delivery.id]


def test_a_row_still_lost_after_another_stall_window_is_re_enqueued_again(lost, queued) -> None:
    delivery = lost(status=Status.PENDING, updated=STALE, enqueued=None)
    sweep()
    old = db.now() - timedelta(seconds=STALE)
    Delivery.update(enqueued_at=old).where(Delivery.id == delivery.id).execute()
    assert sweep().pending == 1
    assert queued() == [delivery.id, delivery.id]


def test_the_sweep_works_through_every_batch(lost, queued) -> None:
    deliveries = {lost(status=Status.PENDING, updated=STALE + i).id for i in range(7)}
    result = sweep(batch_size=3)
    assert result.pending == 7 and set(result.delivery_ids) == deliveries
    assert sorted(queued()) == sorted(deliveries)


def test_the_sweep_of_one_tenant_leaves_other_tenants_alone(lost, queued) -> None:
    acme = lost(status=Status.PENDING, updated=STALE, tenant_id="acme")
    lost(status=Status.PENDING, updated=STALE, tenant_id="globex")
    assert sweep(tenant_id="acme") == SweepResult(pending=1, delivery_ids=(acme.id,))
    assert queued() == [acme.id]


def test_the_stall_threshold_comes_from_the_setting(configured, lost, queued) -> None:
    from chimeway.wiring import runtime as runtime_mod

    runtime_mod.configure(
        database_url=configured.settings.database_url, redis_url="", environ={}, sweep_stall_seconds=3600
    )
    lost(status=Status.PENDING, updated=STALE)
    old = lost(status=Status.PENDING, updated=7200)
    assert sweep() == SweepResult(pending=1, delivery_ids=(old.id,))


def test_the_sweep_reports_to_telemetry_without_recipients(lost) -> None:
    events = []

    def handler(event: str, phase: str, metadata: dict) -> None:
        events.append((event, phase, metadata))

    lost(status=Status.PENDING, updated=STALE, recipient="secret@example.com", payload={"body": "hush"})
    telemetry.attach(handler)
    try:
        sweep()
    finally:
        telemetry.detach(handler)
    assert [(event, phase) for event, phase, _ in events] == [("sweep", "start"), ("sweep", "stop")]
    assert events[-1][2]["reenqueued"] == 1
    assert "secret@example.com" not in repr(events) and "hush" not in repr(events)


def test_a_batch_size_below_one_is_refused(configured) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        sweep(batch_size=0)
