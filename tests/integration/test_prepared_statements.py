"""Prepared hot-path statements on PostgreSQL: planned once per connection, recovered when the server
forgets them, off when CHIMEWAY_DB_PREPARED_STATEMENTS says so, plain SQL on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

import chimeway
from chimeway import db as dbmod
from chimeway.errors import ConfigurationError
from chimeway.states import Status
from chimeway.store import deliveries
from chimeway.wiring import runtime as runtime_mod

PREPARED_NAMES = "SELECT name FROM pg_prepared_statements WHERE left(name, 9) = 'chimeway_' ORDER BY name"


@pytest.fixture
def on_postgres(pg_url: str) -> Iterator[Callable[..., runtime_mod.Runtime]]:
    """Configure Chimeway on the test database with the in-memory broker and the given environment."""
    yield lambda **environ: runtime_mod.configure(database_url=pg_url, redis_url="", environ=environ)
    runtime_mod.reset()


def _prepared(runtime: runtime_mod.Runtime) -> list[str]:
    return [row[0] for row in runtime.database.execute_sql(PREPARED_NAMES).fetchall()]


def _send_claim_record(runtime: runtime_mod.Runtime) -> str:
    delivery = chimeway.send("email", "ada@example.test", {"subject": "hi"}, adapter="log")
    loaded = deliveries.load(delivery.id, dbmod.now())
    assert loaded is not None and loaded.status == Status.PENDING
    attempt = deliveries.claim(delivery.id, lease_seconds=60)
    assert attempt == 1
    assert deliveries.record(
        delivery.id, attempt, outcome="succeeded", error_class=None, adapter="log", status=Status.SUCCEEDED,
        provider="log", provider_message_id=f"log-{uuid.uuid4()}", provider_response={"ok": True}, duration_ms=7,
    )
    return delivery.id


def test_statement_text_numbers_each_placeholder_for_prepare_and_keeps_them_for_execute():
    statement = dbmod.Statement("chimeway_example", "SELECT %s, %s FROM t WHERE id = %s")
    assert statement.prepare_text == "PREPARE chimeway_example AS SELECT $1, $2 FROM t WHERE id = $3"
    assert statement.execute_text == "EXECUTE chimeway_example (%s, %s, %s)"
    assert dbmod.Statement("chimeway_none", "SELECT 1").execute_text == "EXECUTE chimeway_none"


@pytest.mark.postgres
def test_given_postgresql_when_deliveries_go_through_the_hot_path_then_each_statement_is_prepared_once_per_connection(on_postgres):
    runtime = on_postgres()
    first = _send_claim_record(runtime)
    second = _send_claim_record(runtime)
    assert _prepared(runtime) == ["chimeway_claim", "chimeway_insert_delivery", "chimeway_load", "chimeway_record"]
    for delivery_id in (first, second):
        delivery = chimeway.get_delivery(delivery_id)
        assert delivery.status == Status.SUCCEEDED and delivery.provider == "log"
        [attempt] = chimeway.attempts(delivery_id)
        assert (attempt.attempt_number, attempt.outcome, attempt.duration_ms) == (1, "succeeded", 7)
        assert attempt.provider_response == {"ok": True}


@pytest.mark.postgres
def test_given_the_server_forgot_its_prepared_statements_when_the_next_delivery_runs_then_they_are_prepared_again(on_postgres):
    runtime = on_postgres()
    _send_claim_record(runtime)
    runtime.database.execute_sql("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does behind our back
    assert _prepared(runtime) == []
    delivery_id = _send_claim_record(runtime)
    assert chimeway.get_delivery(delivery_id).status == Status.SUCCEEDED
    assert "chimeway_claim" in _prepared(runtime)


@pytest.mark.postgres
def test_given_a_migration_changed_a_column_type_under_a_running_worker_then_the_statement_is_prepared_again(
    pg_empty_url,
):
    runtime = runtime_mod.configure(database_url=pg_empty_url, redis_url="", environ={})
    try:
        chimeway.migrate()
        _send_claim_record(runtime)
        # Another process's migration: the prepared load's result type is no longer the cached one.
        runtime.database.execute_sql("ALTER TABLE chimeway_deliveries ALTER COLUMN channel TYPE varchar(200)")
        delivery_id = _send_claim_record(runtime)
        assert chimeway.get_delivery(delivery_id).status == Status.SUCCEEDED
    finally:
        runtime_mod.reset()


@pytest.mark.postgres
def test_given_prepared_statements_are_off_then_the_hot_path_prepares_nothing(on_postgres):
    runtime = on_postgres(CHIMEWAY_DB_PREPARED_STATEMENTS="false")
    delivery_id = _send_claim_record(runtime)
    assert chimeway.get_delivery(delivery_id).status == Status.SUCCEEDED
    fresh = chimeway.send("email", "bob@example.test", {"subject": "hi"}, adapter="log")
    loaded, attempt = deliveries.load_and_claim(fresh.id, dbmod.now(), lease_seconds=60)
    assert (loaded.status, attempt) == (Status.PENDING, 1)
    assert _prepared(runtime) == []


@pytest.mark.postgres
def test_given_a_send_inside_a_transaction_that_rolls_back_then_its_prepared_insert_still_serves_the_next_send(on_postgres):
    runtime = on_postgres()
    with pytest.raises(RuntimeError), runtime.database.atomic():
        chimeway.send("email", "ada@example.test", {"subject": "hi"}, adapter="log")
        raise RuntimeError("the application changes its mind")
    # PREPARE is not transactional: the statement outlives the rollback and is used, not re-prepared.
    assert "chimeway_insert_delivery" in _prepared(runtime)
    delivery = chimeway.send("email", "bob@example.test", {"subject": "hi"}, adapter="log")
    assert chimeway.get_delivery(delivery.id).recipient == "bob@example.test"
    count = runtime.database.execute_sql("SELECT count(*) FROM chimeway_deliveries").fetchone()[0]
    assert count == 1


def test_given_sqlite_then_the_hot_path_runs_plain_sql(sqlite_url):
    runtime = runtime_mod.configure(database_url=sqlite_url, redis_url="", environ={})
    try:
        chimeway.migrate()
        delivery_id = _send_claim_record(runtime)
        assert chimeway.get_delivery(delivery_id).status == Status.SUCCEEDED
    finally:
        runtime_mod.reset()


def test_an_invalid_prepared_statements_setting_fails_at_configure_time_naming_the_variable():
    with pytest.raises(ConfigurationError, match="CHIMEWAY_DB_PREPARED_STATEMENTS") as caught:
        runtime_mod.configure(redis_url="", environ={"CHIMEWAY_DB_PREPARED_STATEMENTS": "sometimes"})
    assert caught.value.variable == "CHIMEWAY_DB_PREPARED_STATEMENTS"
