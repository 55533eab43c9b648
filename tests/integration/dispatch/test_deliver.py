"""The deliver actor end to end on the stub broker, on SQLite and PostgreSQL (docs/architecture.md §4–§5)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

import chimeway
from chimeway import db
from chimeway.dispatch.enqueue import enqueue
from chimeway.errors import UnhandledOutcomeError
from chimeway.states import Status
from chimeway.store import deliveries
from chimeway.testing import drain, start_worker


def outcomes_of(delivery_id):
    return [(a.attempt_number, a.outcome, a.error_class) for a in chimeway.attempts(delivery_id)]


def test_given_an_ok_script_when_delivered_then_one_attempt_succeeds_and_the_provider_message_id_is_stored(
    runtime, worker, calls
):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"], "fake_provider": "postmark",
                                                      "fake_provider_message_id": "pm-1"})
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.attempt_count) == ("succeeded", 1)
    assert (delivery.provider, delivery.provider_message_id) == ("postmark", "pm-1")
    assert outcomes_of(sent.id) == [(1, "succeeded", None)]
    assert chimeway.attempts(sent.id)[0].provider_message_id == "pm-1"
    assert delivery.enqueued_at is not None and delivery.lease_until is None
    assert [c.attempt_number for c in calls(sent.id)] == [1]


def test_given_temporary_temporary_ok_when_delivered_then_attempts_1_2_3_end_succeeded(runtime, worker, calls):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary", "temporary", "ok"]})
    assert drain(runtime) == []
    assert chimeway.get_delivery(sent.id).status == "succeeded"
    assert outcomes_of(sent.id) == [(1, "failed", "temporary"), (2, "failed", "temporary"), (3, "succeeded", None)]
    assert [c.attempt_number for c in calls(sent.id)] == [1, 2, 3]


def test_given_only_temporary_failures_when_max_attempts_run_out_then_cancelled_retries_exhausted_without_dead_letter(
    runtime, worker, calls
):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=3)
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")
    assert outcomes_of(sent.id) == [(n, "failed", "temporary") for n in (1, 2, 3)]
    assert len(calls(sent.id)) == 3


def test_given_earlier_attempts_recorded_by_other_messages_when_a_fresh_message_runs_the_final_attempt_then_it_exhausts(
    runtime, create, calls
):
    delivery = create(["temporary"], max_attempts=3)
    for number in (1, 2):  # recorded through the writers, as two earlier messages would have
        assert deliveries.claim(delivery.id, lease_seconds=60) == number
        assert deliveries.record(delivery.id, number, outcome="failed", error_class="temporary", adapter="fake",
                                 status=Status.FAILED)
    enqueue(delivery.id, runtime=runtime)
    with start_worker(runtime):
        assert drain(runtime) == []
    delivery = chimeway.get_delivery(delivery.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")
    assert outcomes_of(delivery.id) == [(n, "failed", "temporary") for n in (1, 2, 3)]
    assert [c.attempt_number for c in calls(delivery.id)] == [3]


def test_given_a_permanent_error_when_delivered_then_cancelled_permanent_failure_after_one_attempt(runtime, worker):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["permanent", "ok"]})
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "permanent_failure")
    assert outcomes_of(sent.id) == [(1, "rejected", "permanent")]


def test_given_a_bounce_when_delivered_then_cancelled_bounced_after_one_attempt(runtime, worker):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["bounced", "ok"]})
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "bounced")
    assert outcomes_of(sent.id) == [(1, "bounced", "bounced")]


@pytest.mark.parametrize("script", ["garbage", "crash"])
def test_given_an_unclassifiable_outcome_before_the_final_attempt_then_an_unhandled_outcome_error_is_logged_and_the_next_attempt_enqueued(
    runtime, create, script, caplog, queued
):
    sent = create([script], max_attempts=3)  # no message: the actor runs by hand, to see what it logs
    with caplog.at_level(logging.ERROR, logger="chimeway"):
        runtime.actors["deliver"](sent.id)
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    error = logged.exc_info[1]
    assert isinstance(error, UnhandledOutcomeError)
    assert error.fields() == logged.unhandled_outcome == {
        "delivery_id": sent.id, "outcome": "rejected", "error_class": "unknown_classification", "status": "failed",
        "attempt": 1, "max_attempts": 3}
    delivery = chimeway.get_delivery(sent.id)
    assert delivery.status == "failed" and delivery.next_attempt_at is not None
    assert logged.getMessage().startswith(f"UnhandledOutcomeError: unhandled outcome for delivery {sent.id}")
    assert f"next attempt at {delivery.next_attempt_at.isoformat()}" in logged.getMessage()
    assert outcomes_of(sent.id) == [(1, "rejected", "unknown_classification")]
    assert queued() == 1  # the next attempt's message, due at next_attempt_at


@pytest.mark.parametrize("script", ["garbage", "crash"])
def test_given_an_unclassifiable_outcome_on_every_attempt_when_the_final_attempt_runs_then_it_converges(
    runtime, worker, script
):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": [script]}, max_attempts=2)
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")
    assert outcomes_of(sent.id) == [(1, "rejected", "unknown_classification"), (2, "rejected", "unknown_classification")]


def test_given_a_terminal_delivery_when_another_message_arrives_then_no_call_and_no_attempt(runtime, worker, calls):
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]})
    drain(runtime)
    assert enqueue(sent.id, dedupe=False, runtime=runtime) is True
    assert drain(runtime) == []
    assert len(calls(sent.id)) == 1
    assert outcomes_of(sent.id) == [(1, "succeeded", None)]


def test_given_a_delivery_dispatched_under_a_live_lease_when_a_message_arrives_then_no_call(runtime, create, worker, calls):
    sent = create()
    assert deliveries.claim(sent.id, lease_seconds=300) == 1
    enqueue(sent.id, dedupe=False, runtime=runtime)
    assert drain(runtime) == []
    assert calls(sent.id) == [] and chimeway.attempts(sent.id) == []
    assert chimeway.get_delivery(sent.id).status == "dispatched"


def test_given_a_worker_died_mid_attempt_when_the_lease_expired_then_the_next_message_claims_attempt_2(
    runtime, create, worker, calls
):
    sent = create()
    assert deliveries.claim(sent.id, lease_seconds=5, now=db.now() - timedelta(seconds=10)) == 1
    enqueue(sent.id, dedupe=False, runtime=runtime)
    assert drain(runtime) == []
    assert chimeway.get_delivery(sent.id).status == "succeeded"
    assert outcomes_of(sent.id) == [(2, "succeeded", None)]


def test_given_a_crash_on_the_final_attempt_when_its_lease_expired_then_the_budget_is_spent_and_it_exhausts(
    runtime, create, worker, calls
):
    sent = create(max_attempts=1)
    assert deliveries.claim(sent.id, lease_seconds=5, now=db.now() - timedelta(seconds=10)) == 1
    enqueue(sent.id, dedupe=False, runtime=runtime)
    assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")
    assert calls(sent.id) == []


@pytest.fixture
def database_blips(runtime):
    """A policy rule that raises for the first ``n`` messages once ``after`` attempts were made:
    failures before the claim, which spend no attempt."""
    from chimeway import policy

    left = {"n": 0, "after": 0}

    def database_blip(delivery, now):
        if left["n"] > 0 and delivery.attempt_count >= left["after"]:
            left["n"] -= 1
            raise ConnectionError("test: the database is unreachable")
        return policy.Proceed()

    policy.register(database_blip)
    yield left
    policy.reset()


def test_given_dramatiqs_retries_of_a_message_run_out_before_any_attempt_then_a_fresh_message_delivers_it(
    runtime, create, worker, database_blips, caplog
):
    sent = create(["ok"], max_attempts=5)
    database_blips["n"] = 1
    runtime.actors["deliver"].send_with_options(args=(sent.id,), max_retries=0)
    with caplog.at_level(logging.WARNING, logger="chimeway"):
        assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert delivery.status == "succeeded"
    assert outcomes_of(sent.id) == [(1, "succeeded", None)]
    assert any(sent.id in r.getMessage() and "re-enqueued as a fresh message" in r.getMessage() for r in caplog.records)


def test_given_transient_failures_and_failures_that_spend_no_attempt_then_only_attempts_spend_the_budget(
    runtime, create, worker, database_blips
):
    from chimeway.dispatch.actors import DRAMATIQ_MAX_RETRIES

    sent = create(["temporary", "temporary", "ok"], max_attempts=3)
    enqueue(sent.id, runtime=runtime)
    # after the first transient failure, more failures than one message's Dramatiq retries
    database_blips.update(n=DRAMATIQ_MAX_RETRIES + 3, after=1)
    assert drain(runtime) == []
    assert chimeway.get_delivery(sent.id).status == "succeeded"
    assert outcomes_of(sent.id) == [(1, "failed", "temporary"), (2, "failed", "temporary"), (3, "succeeded", None)]


def test_given_a_message_for_a_missing_delivery_when_processed_then_it_is_acknowledged_with_a_warning(
    runtime, worker, caplog
):
    missing = "00000000-0000-4000-8000-000000000000"
    with caplog.at_level(logging.WARNING, logger="chimeway"):
        runtime.actors["deliver"].send(missing)
        assert drain(runtime) == []
    assert any(missing in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.slow
def test_given_an_attempt_outliving_its_lease_then_dramatiq_interrupts_it_and_the_next_message_claims_again(
    database_url,
):
    from chimeway.wiring import runtime as runtime_mod

    configured = runtime_mod.configure(database_url=database_url, redis_url="", environ={}, lease_seconds=1,
                                       backoff_min_ms=1, backoff_max_ms=20, default_adapter="fake")
    try:
        assert configured.actors["deliver"].options["time_limit"] == 1000
        sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["sleep:2500", "ok"]})
        with start_worker(configured):
            assert drain(configured) == []
        assert chimeway.get_delivery(sent.id).status == "succeeded"
        assert outcomes_of(sent.id) == [(2, "succeeded", None)]
    finally:
        runtime_mod.reset()


def test_given_a_claim_when_recorded_then_state_and_attempt_row_are_written_together_and_only_under_that_claim(
    runtime, create
):
    delivery = create(["ok"], max_attempts=3)
    assert deliveries.claim(delivery.id, lease_seconds=60) == 1
    # The wrong attempt number (the claim moved on): nothing written at all.
    assert not deliveries.record(delivery.id, 2, outcome="succeeded", error_class=None, adapter="fake",
                                 status=Status.SUCCEEDED)
    assert outcomes_of(delivery.id) == []
    assert chimeway.get_delivery(delivery.id).status == "dispatched"
    assert deliveries.record(
        delivery.id, 1, outcome="failed", error_class="temporary", adapter="fake", status=Status.FAILED,
        next_attempt_at=db.now() + timedelta(seconds=30), provider_response={"code": 421},
        error_message="x" * 2000, duration_ms=7,
    )
    [attempt] = deliveries.attempts(delivery.id)
    assert (attempt.attempt_number, attempt.outcome, attempt.error_class, attempt.adapter) == (1, "failed", "temporary", "fake")
    assert (attempt.provider_response, attempt.duration_ms, len(attempt.error_message)) == ({"code": 421}, 7, 1000)
    stored = chimeway.get_delivery(delivery.id)
    assert (stored.status, stored.lease_until is None, stored.next_attempt_at is not None) == ("failed", True, True)
    # Recording the same attempt again (a duplicate message): the claim is gone, nothing is written.
    assert not deliveries.record(delivery.id, 1, outcome="succeeded", error_class=None, adapter="fake",
                                 status=Status.SUCCEEDED)
    assert len(deliveries.attempts(delivery.id)) == 1
    # An invalid attempt row leaves the state untouched too (one statement / one transaction).
    assert deliveries.claim(delivery.id, lease_seconds=60, now=db.now() + timedelta(seconds=60)) == 2
    with pytest.raises(Exception):  # noqa: B017, PT011 - the dialect's own integrity error
        deliveries.record(delivery.id, 2, outcome="nonsense", error_class=None, adapter="fake", status=Status.SUCCEEDED)
    assert chimeway.get_delivery(delivery.id).status == "dispatched"
    assert len(deliveries.attempts(delivery.id)) == 1


#: The try's record fails (its batch's statement, then its own statement when the worker batches).
_LOSE_FIRST_RECORD = [
    "CREATE SEQUENCE chimeway_test_records",
    "CREATE FUNCTION chimeway_test_lose_record() RETURNS trigger AS $$ BEGIN "
    "IF nextval('chimeway_test_records') <= {failures} THEN RAISE EXCEPTION 'test: the connection broke'; END IF; "
    "RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER chimeway_test_lose_record BEFORE INSERT ON chimeway_delivery_attempts FOR EACH ROW "
    "EXECUTE FUNCTION chimeway_test_lose_record()",
]


def test_given_a_try_that_claimed_and_failed_before_recording_when_dramatiq_retries_it_then_it_carries_its_claim_on(
    runtime, dialect, create, worker, calls
):
    if dialect != "postgres":
        pytest.skip("the failing record is a PostgreSQL trigger (a sequence survives the rollback)")
    for statement in _LOSE_FIRST_RECORD:
        db.execute(statement.replace("{failures}", "2" if runtime.batches else "1"))
    try:
        sent = create(["ok"])
        enqueue(sent.id, runtime=runtime)
        assert drain(runtime) == []
    finally:
        db.execute("DROP TRIGGER chimeway_test_lose_record ON chimeway_delivery_attempts")
        db.execute("DROP FUNCTION chimeway_test_lose_record()")
        db.execute("DROP SEQUENCE chimeway_test_records")
    # The retry recognized its own live claim (a 300 s lease) instead of waiting for it to expire.
    assert chimeway.get_delivery(sent.id).status == "succeeded"
    assert outcomes_of(sent.id) == [(1, "succeeded", None)]
    assert [c.attempt_number for c in calls(sent.id)] == [1, 1]


def test_given_a_claim_batch_that_committed_but_lost_its_answer_then_the_try_carries_its_own_claim_on(
    runtime, dialect, create, worker, calls, monkeypatch
):
    if dialect != "postgres":
        pytest.skip("group commit is PostgreSQL's")
    claim_many = deliveries.load_and_claim_many

    def committed_then_cut(*args, **kwargs):  # the statement ran and committed; its answer never arrived
        claim_many(*args, **kwargs)
        raise ConnectionError("test: the answer was lost on the wire")

    monkeypatch.setattr(deliveries, "load_and_claim_many", committed_then_cut)
    sent = create(["ok"])
    enqueue(sent.id, runtime=runtime)
    assert drain(runtime) == []
    # one claim, carried on by the same try (its own lease), not a second claim nor a lease left to expire
    assert chimeway.get_delivery(sent.id).status == "succeeded"
    assert outcomes_of(sent.id) == [(1, "succeeded", None)]
    assert [c.attempt_number for c in calls(sent.id)] == [1]
