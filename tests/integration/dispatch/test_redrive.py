"""Redrive: an operator sends a given-up delivery again (chimeway.redrive, chimeway redrive)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import chimeway
from chimeway import db
from chimeway.errors import DeliveryNotFound, EventLedgerImmutableError, NotRedrivableError
from chimeway.ops import operator_record
from chimeway.store import deliveries
from chimeway.testing import drain


def _send(outcomes, max_attempts=2, **options):
    return chimeway.send("email", "ada@example.com", {"fake_outcomes": outcomes}, max_attempts=max_attempts,
                         adapter="fake", **options)


def test_given_an_exhausted_delivery_when_redriven_then_it_gets_a_new_budget_and_succeeds(runtime, worker, calls):
    delivery = _send(["temporary", "temporary", "ok"], max_attempts=2)
    drain(runtime)
    assert chimeway.get_delivery(delivery.id).reason == "retries_exhausted"

    redriven = chimeway.redrive(delivery.id, actor="test:ops", why="provider back")
    assert (redriven.status, redriven.reason, redriven.max_attempts) == ("pending", None, 4)  # 2 spent + 2 more
    drain(runtime)

    final = chimeway.get_delivery(delivery.id)
    assert (final.status, final.attempt_count) == ("succeeded", 3)
    assert [a.attempt_number for a in chimeway.attempts(delivery.id)] == [1, 2, 3]  # numbers continue
    [action] = operator_record.for_delivery(delivery.id)
    assert (action.action, action.actor, action.reason) == ("redrive", "test:ops", "provider back")
    assert action.data["previous_reason"] == "retries_exhausted" and action.data["budget"] == 2


def test_given_a_permanent_failure_when_redriven_with_a_budget_then_the_budget_adds_to_the_spent(runtime, worker):
    delivery = _send(["permanent", "ok"], max_attempts=5)
    drain(runtime)
    assert chimeway.get_delivery(delivery.id).reason == "permanent_failure"

    assert chimeway.redrive(delivery.id, max_attempts=1).max_attempts == 2  # 1 spent + 1
    drain(runtime)
    assert chimeway.get_delivery(delivery.id).status == "succeeded"


def test_given_a_second_exhaustion_when_redriven_by_default_then_the_original_budget_is_given_again(runtime, worker):
    delivery = _send(["temporary"], max_attempts=2)
    drain(runtime)
    chimeway.redrive(delivery.id, max_attempts=1)
    drain(runtime)
    assert chimeway.get_delivery(delivery.id).attempt_count == 3
    assert chimeway.redrive(delivery.id).max_attempts == 5  # 3 spent + the original 2


@pytest.mark.parametrize("outcomes, state", [(["ok"], "succeeded"), (["bounced"], "cancelled")])
def test_given_a_delivery_not_redrivable_when_redriven_then_it_is_refused_and_nothing_changes(
    runtime, worker, outcomes, state
):
    delivery = _send(outcomes)
    drain(runtime)
    before = chimeway.get_delivery(delivery.id)
    with pytest.raises(NotRedrivableError, match="nothing was changed") as caught:
        chimeway.redrive(delivery.id)
    assert caught.value.status == state
    after = chimeway.get_delivery(delivery.id)
    assert (after.status, after.reason, after.max_attempts, after.updated_at) == (
        before.status, before.reason, before.max_attempts, before.updated_at)
    assert operator_record.for_delivery(delivery.id) == []


def test_given_a_pending_or_user_cancelled_delivery_when_redriven_then_it_is_refused(runtime):
    pending = _send(["ok"])
    with pytest.raises(NotRedrivableError):
        chimeway.redrive(pending.id)
    chimeway.cancel(pending.id)
    with pytest.raises(NotRedrivableError, match="cancelled_by_user"):
        chimeway.redrive(pending.id)


def test_given_bad_input_when_redriven_then_a_clear_error_and_nothing_changes(runtime, worker):
    delivery = _send(["permanent"])
    drain(runtime)
    with pytest.raises(ValueError, match="from 1 to 100"):
        chimeway.redrive(delivery.id, max_attempts=0)
    with pytest.raises(DeliveryNotFound):
        chimeway.redrive(delivery.id, tenant_id="other")
    with pytest.raises(DeliveryNotFound):
        chimeway.redrive("not-a-uuid")
    assert chimeway.get_delivery(delivery.id).status == "cancelled"


def test_given_the_operator_record_when_changed_then_it_refuses(runtime, worker):
    delivery = _send(["permanent"])
    drain(runtime)
    chimeway.redrive(delivery.id)
    with pytest.raises(EventLedgerImmutableError), db.transaction():
        db.execute("UPDATE chimeway_operator_actions SET actor = 'x'")


def test_given_concurrent_redrives_of_one_delivery_then_exactly_one_wins(runtime, dialect):
    delivery = _send(["permanent"], max_attempts=1)
    deliveries.claim(delivery.id, lease_seconds=60)
    deliveries.record(delivery.id, 1, outcome="rejected", error_class="permanent", adapter="fake",
                      status=deliveries.Status.CANCELLED, reason=deliveries.Reason.PERMANENT_FAILURE)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            chimeway.redrive(delivery.id, runtime=runtime)
            results.append("won")
        except NotRedrivableError:
            results.append("refused")
        except Exception as err:  # SQLite: a writer that finds the database locked also loses
            results.append(f"error {type(err).__name__}")
        finally:
            runtime.database.close()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("won") == 1, results
    assert len(operator_record.for_delivery(delivery.id)) == 1
    assert chimeway.get_delivery(delivery.id).max_attempts == 2


def test_given_outage_casualties_when_bulk_redriven_then_only_the_matching_ones_go_back(runtime, worker):
    from chimeway.ops.operations import redrive_many

    exhausted = [_send(["temporary"], max_attempts=1) for _ in range(3)]
    permanent = _send(["permanent"])
    drain(runtime)
    since = db.now() - timedelta(hours=2)

    dry = redrive_many(reason="retries_exhausted", since=since, adapter="fake", dry_run=True, runtime=runtime)
    assert sorted(dry.matched) == sorted(d.id for d in exhausted) and dry.redriven == []
    assert chimeway.get_delivery(exhausted[0].id).status == "cancelled"

    assert redrive_many(reason="retries_exhausted", since=since, adapter="postmark", runtime=runtime).matched == []
    done = redrive_many(reason="retries_exhausted", since=since, adapter="fake", max_attempts=1, runtime=runtime)
    assert sorted(done.redriven) == sorted(d.id for d in exhausted)
    assert chimeway.get_delivery(permanent.id).reason == "permanent_failure"
