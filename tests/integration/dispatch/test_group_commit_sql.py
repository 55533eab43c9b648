"""The batch statements of group commit (``deliveries.load_and_claim_many``, ``deliveries.record_many``)
answer for every delivery exactly as the one-delivery statements do: each case is built twice, one
twin goes through the one-delivery statement, the other in a single batch with every other case, and
the answers and the rows they leave must be the same."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from chimeway import db, suppressions
from chimeway.models import Delivery
from chimeway.states import Status
from chimeway.store import deliveries
from chimeway.wiring import runtime as runtime_mod

pytestmark = pytest.mark.postgres

LEASE = 30


@pytest.fixture
def pg_runtime(pg_url: str) -> Iterator[runtime_mod.Runtime]:
    configured = runtime_mod.configure(database_url=pg_url, redis_url="", environ={}, default_adapter="fake")
    yield configured
    runtime_mod.reset()


def claim_cases(now: Any) -> dict[str, dict[str, Any]]:
    minute = timedelta(minutes=1)
    return {
        "pending": {},
        "succeeded": {"status": "succeeded", "attempt_count": 1},
        "live lease": {"status": "dispatched", "attempt_count": 1, "lease_until": now + minute},
        "expired lease": {"status": "dispatched", "attempt_count": 1, "lease_until": now - minute},
        "retry not due": {"status": "failed", "attempt_count": 1, "next_attempt_at": now + minute},
        "retry due": {"status": "failed", "attempt_count": 1, "next_attempt_at": now - minute},
        "deferred": {"orchestration_state": "deferred", "next_eligible_at": now + minute},
        "budget spent": {"status": "failed", "attempt_count": 3, "max_attempts": 3},
        "suppressed": {"recipient": "gone@example.com"},
        "delayed fallback": {"delay_fallback": True},
        "upper-case address": {"recipient": "Ann@Example.com"},
    }


def make(fields: dict[str, Any]) -> str:
    values = {"notification_id": str(uuid.uuid4()), "channel": "email", "recipient": "ann@example.com",
              "adapter": "fake", **fields}
    return str(Delivery.create(**values).id)


def state(delivery_id: str) -> tuple[Any, ...]:
    row = deliveries.find(delivery_id)
    if row is None:
        return ("missing",)
    return (row.status, row.attempt_count, row.lease_until, row.orchestration_state, row.next_eligible_at)


def loaded(answer: tuple[Any, Any]) -> tuple[Any, ...]:
    delivery, attempt = answer
    if delivery is None:
        return (None, attempt)
    return (delivery.status, delivery.attempt_count, attempt, delivery.policy_facts)


def test_a_claim_batch_answers_each_delivery_as_the_one_delivery_statement_does(pg_runtime):
    now = db.now()
    suppressions.add("gone@example.com", "email")
    cases = claim_cases(now)
    alone = {name: make(fields) for name, fields in cases.items()}
    batched = {name: make(fields) for name, fields in cases.items()}
    alone["unknown"] = batched["unknown"] = str(uuid.uuid4())

    one_by_one = {name: deliveries.load_and_claim(key, now, lease_seconds=LEASE) for name, key in alone.items()}
    names = list(batched)
    in_batch = dict(zip(names, deliveries.load_and_claim_many(
        [(batched[name], now) for name in names], lease_seconds=LEASE), strict=True))

    for name in names:
        assert loaded(in_batch[name]) == loaded(one_by_one[name]), name
        assert state(batched[name]) == state(alone[name]), name
    claimed = {name for name, (_, attempt) in in_batch.items() if attempt is not None}
    # the cases cover both answers, so the comparison above can tell them apart
    assert claimed == {"pending", "expired lease", "retry due"}
    for name in claimed:  # claimed at the time its request gave, with that time's lease
        row = deliveries.find(batched[name])
        assert (row.updated_at, row.lease_until) == (now, now + timedelta(seconds=LEASE))


def record_entry(delivery_id: str, attempt: int, status: Status, **fields: Any) -> deliveries.Recording:
    if fields.get("provider_message_id"):  # unique per tenant and provider: each twin has its own
        fields["provider_message_id"] = f"{fields['provider_message_id']}-{delivery_id}"
    return deliveries.recording(
        delivery_id, attempt, outcome="succeeded" if status is Status.SUCCEEDED else "failed",
        error_class=None if status is Status.SUCCEEDED else "temporary", adapter="fake", status=status, **fields)


def attempt_rows(delivery_id: str) -> list[tuple[Any, ...]]:
    return [(a.attempt_number, a.outcome, a.error_class, a.error_message, a.provider_message_id, a.provider_response,
             a.duration_ms) for a in deliveries.attempts(delivery_id)]


def test_a_record_batch_writes_each_outcome_guarded_by_its_own_claim(pg_runtime):
    now = db.now()
    lease = now + timedelta(seconds=LEASE)
    claimed = {"status": "dispatched", "attempt_count": 1, "lease_until": lease}
    # (fields of the delivery, the record written for it)
    cases = {
        "success": (claimed, dict(status=Status.SUCCEEDED, provider="fake", provider_message_id="m-1",
                                  provider_response={"id": "m-1", "quote": 'a "b" \\ {c,d}'}, duration_ms=12)),
        "transient": (claimed, dict(status=Status.FAILED, next_attempt_at=now + timedelta(seconds=5),
                                    error_message='TemporaryError: "busy", {try} again\\later')),
        "claim lost": ({**claimed, "attempt_count": 2}, dict(status=Status.SUCCEEDED)),
        "already terminal": ({"status": "cancelled", "attempt_count": 1}, dict(status=Status.SUCCEEDED)),
    }
    alone = {name: make(fields) for name, (fields, _) in cases.items()}
    batched = {name: make(fields) for name, (fields, _) in cases.items()}

    one_by_one = {name: deliveries.write(record_entry(alone[name], 1, **entry)) for name, (_, entry) in cases.items()}
    names = list(cases)
    in_batch = dict(zip(names, deliveries.record_many(
        [record_entry(batched[name], 1, **cases[name][1]) for name in names]), strict=True))

    for name in names:
        assert in_batch[name] == (tuple(one_by_one[name]) if one_by_one[name] else None), name
        assert state(batched[name]) == state(alone[name]), name
        assert [row[:4] + row[5:] for row in attempt_rows(batched[name])] == [
            row[:4] + row[5:] for row in attempt_rows(alone[name])], name
    assert {name for name, row in in_batch.items() if row} == {"success", "transient"}
    assert attempt_rows(batched["transient"])[0][3] == 'TemporaryError: "busy", {try} again\\later'
    assert attempt_rows(batched["success"])[0][4] == f"m-1-{batched['success']}"


def test_a_record_whose_batch_committed_but_lost_its_answer_is_not_called_lost(pg_runtime):
    delivery_id = make({"status": "dispatched", "attempt_count": 1,
                        "lease_until": db.now() + timedelta(seconds=LEASE)})
    entry = record_entry(delivery_id, 1, Status.SUCCEEDED)
    assert deliveries.record_many([entry]) == [("default", "email", "fake")]
    # the fallback writes the same record alone: its claim is gone, but its attempt row is there
    assert deliveries.write(entry) == ("default", "email", "fake")
    assert len(deliveries.attempts(delivery_id)) == 1


_POISON = [
    "CREATE FUNCTION chimeway_test_poison() RETURNS trigger AS $$ BEGIN "
    "IF NEW.error_message = 'poison' THEN RAISE EXCEPTION 'test: a row the database refuses'; END IF; "
    "RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER chimeway_test_poison BEFORE INSERT ON chimeway_delivery_attempts FOR EACH ROW "
    "EXECUTE FUNCTION chimeway_test_poison()",
]


def test_a_row_the_database_refuses_fails_its_own_record_and_not_its_neighbours_in_the_batch(pg_runtime):
    for statement in _POISON:
        db.execute(statement)
    batches = pg_runtime.batches
    run = batches.records.run_batch
    held = threading.Event()

    def hold_first(entries):  # the first batch holds, so that the four records below share the next one
        if not held.is_set():
            held.set()
            time.sleep(0.3)
        return run(entries)

    batches.records.run_batch = hold_first
    batches.records.max_batches = 1  # the four below wait behind the held one, and share the next
    claimed = {"status": "dispatched", "attempt_count": 1, "lease_until": db.now() + timedelta(seconds=LEASE)}
    ids = [make(claimed) for _ in range(5)]
    outcomes: dict[str, Any] = {}

    def write(delivery_id: str, message: str | None) -> None:
        entry = record_entry(delivery_id, 1, Status.FAILED if message else Status.SUCCEEDED, error_message=message)
        try:
            outcomes[delivery_id] = batches.write(entry)
        except Exception as err:
            outcomes[delivery_id] = type(err).__name__

    threads = [threading.Thread(target=write, args=(ids[0], None))]
    threads += [threading.Thread(target=write, args=(key, "poison" if key == ids[2] else None)) for key in ids[1:]]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join(10)
    assert batches.records.batches == 2  # the lone first one, then the four in one statement, which failed
    assert outcomes.pop(ids[2]) == "InternalError"
    assert set(outcomes.values()) == {("default", "email", "fake")}
    assert [state(key)[0] for key in ids] == ["succeeded", "succeeded", "dispatched", "succeeded", "succeeded"]
