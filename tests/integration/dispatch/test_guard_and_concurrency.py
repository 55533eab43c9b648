"""The ExhaustionGuard when its write fails, concurrent messages and claims, and telemetry hygiene
(SQLite and PostgreSQL, stub broker)."""

from __future__ import annotations

import json
import logging
import threading

import pytest

import chimeway
from chimeway import db, telemetry
from chimeway.dispatch.enqueue import enqueue
from chimeway.store import deliveries
from chimeway.testing import drain

_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER chimeway_test_refuse_exhaust BEFORE UPDATE ON chimeway_deliveries "
        "WHEN NEW.reason = 'retries_exhausted' "
        "BEGIN SELECT RAISE(ABORT, 'test: refusing retries_exhausted'); END",
    ],
    "postgres": [
        "CREATE FUNCTION chimeway_test_refuse_exhaust() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'test: refusing retries_exhausted'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER chimeway_test_refuse_exhaust BEFORE UPDATE ON chimeway_deliveries FOR EACH ROW "
        "WHEN (NEW.reason = 'retries_exhausted') EXECUTE FUNCTION chimeway_test_refuse_exhaust()",
    ],
}
_ALLOW = {
    "sqlite": ["DROP TRIGGER IF EXISTS chimeway_test_refuse_exhaust"],
    "postgres": [
        "DROP TRIGGER IF EXISTS chimeway_test_refuse_exhaust ON chimeway_deliveries",
        "DROP FUNCTION IF EXISTS chimeway_test_refuse_exhaust()",
    ],
}


@pytest.fixture
def exhaustion_write_fails(runtime, dialect):
    """A real database trigger that refuses the cancelled(retries_exhausted) write."""
    for statement in _REFUSE[dialect]:
        db.execute(statement)
    yield
    for statement in _ALLOW[dialect]:
        db.execute(statement)


def test_given_the_exhaustion_write_fails_when_the_final_attempt_fails_then_the_message_is_dead_lettered_with_a_critical_log(
    runtime, worker, exhaustion_write_fails, caplog
):
    with caplog.at_level(logging.WARNING, logger="chimeway"):
        sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=2)
        dead = drain(runtime)
    assert [m.args for m in dead] == [(sent.id,)]
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.attempt_count) == ("failed", 2)  # not terminal: the sweep converges it later
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and sent.id in critical[0].getMessage()


def test_given_ten_duplicate_messages_at_once_then_the_adapter_is_called_once(runtime, create, calls):
    from chimeway.testing import start_worker

    delivery = create(["sleep:300"])
    for _ in range(10):
        assert enqueue(delivery.id, dedupe=False, runtime=runtime)
    with start_worker(runtime, threads=10):
        assert drain(runtime) == []
    assert len(calls(delivery.id)) == 1
    assert [a.attempt_number for a in chimeway.attempts(delivery.id)] == [1]
    assert chimeway.get_delivery(delivery.id).status == "succeeded"


def test_given_five_concurrent_claims_then_exactly_one_wins(runtime, create):
    delivery = create()
    start = threading.Barrier(5)
    results = []

    def claim():
        start.wait()
        try:
            results.append(deliveries.claim(delivery.id, lease_seconds=60))
        finally:
            runtime.database.close()

    threads = [threading.Thread(target=claim) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results, key=str) == [1, None, None, None, None]
    assert chimeway.get_delivery(delivery.id).attempt_count == 1


def test_given_deliveries_with_every_outcome_then_telemetry_metadata_never_holds_the_recipient_or_payload(
    runtime, worker
):
    seen = []

    def handler(event, phase, metadata):
        seen.append((event, phase, metadata))

    telemetry.attach(handler)
    try:
        secret_recipient, secret_body = "zelda.secret@example.com", "the-very-private-body"
        ids = [
            chimeway.send("email", secret_recipient, {"body": secret_body, "fake_outcomes": script},
                          max_attempts=2).id
            for script in (["ok"], ["temporary", "ok"], ["permanent"], ["bounced"], ["garbage"], ["crash"])
        ]
        drain(runtime)
    finally:
        telemetry.detach(handler)
    events = {(event, phase) for event, phase, _ in seen}
    assert {("perform", "start"), ("perform", "stop"), ("attempt_record", "stop"), ("delivery", "terminal")} <= events
    assert {m.get("delivery_id") for _, _, m in seen} >= set(ids)
    text = json.dumps([m for _, _, m in seen], default=str)
    assert secret_recipient not in text and secret_body not in text and "fake_outcomes" not in text
    assert all(set(m) <= telemetry.ALLOWED_KEYS for _, _, m in seen)


def test_given_a_delivery_when_it_is_performed_then_logs_carry_its_context_but_never_the_recipient(runtime, worker, caplog):
    from chimeway.wiring.logcontext import ContextFilter

    handler_filter = ContextFilter()
    with caplog.at_level(logging.DEBUG):
        caplog.handler.addFilter(handler_filter)
        try:
            sent = chimeway.send("email", "zelda.secret@example.com", {"body": "private", "fake_outcomes": ["garbage"]},
                                 max_attempts=2)
            drain(runtime)
        finally:
            caplog.handler.removeFilter(handler_filter)
    ours = [r for r in caplog.records if r.name.startswith(("chimeway", "dramatiq"))]  # not peewee's SQL echo
    assert ours and not any("zelda.secret" in r.getMessage() or "private" in r.getMessage() for r in ours)
    ours = [r for r in ours if r.name.startswith("chimeway") and getattr(r, "delivery_id", None) == sent.id]
    assert ours and any(r.attempt == 2 and r.adapter == "fake" and r.tenant == "default" for r in ours)


def test_given_a_failed_exhaustion_write_when_the_delivery_is_re_enqueued_later_then_it_converges_without_a_call(
    runtime, worker, dialect, calls
):
    for statement in _REFUSE[dialect]:
        db.execute(statement)
    try:
        sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=2)
        assert len(drain(runtime)) == 1
    finally:
        for statement in _ALLOW[dialect]:
            db.execute(statement)
    enqueue(sent.id, dedupe=False, runtime=runtime)  # what the sweep does with a failed delivery past its retry time
    drain(runtime)
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.reason) == ("cancelled", "retries_exhausted")
    assert len(calls(sent.id)) == 2
