"""The migration runner and the schema it builds, on an empty PostgreSQL and SQLite database each."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import peewee
import pytest

from chimeway import db as dbmod
from chimeway.errors import EventLedgerImmutableError, MigrationError
from chimeway.models import ALL_MODELS, Attempt, Delivery, Event, Suppression
from chimeway.states import (
    AttemptOutcome,
    ErrorClass,
    EventType,
    Orchestration,
    RejectReason,
    Status,
    SuppressionReason,
)
from chimeway.store.migrator import HISTORY_TABLE, load_migrations, migrate, status
from chimeway.wiring.config import load_settings


@pytest.fixture
def database(empty_url: str) -> Iterator[peewee.Database]:
    database = dbmod.connect(load_settings(environ={}, database_url=empty_url))
    dbmod.bind(database)
    yield database
    close_all = getattr(database, "close_all", None)
    close_all() if close_all else database.close()


def test_given_an_empty_database_when_migrating_then_every_table_exists(database):
    result = migrate(database)
    assert result.applied == [m.name for m in load_migrations(dialect(database))]
    tables = set(database.get_tables())
    assert {model._meta.table_name for model in ALL_MODELS} | {HISTORY_TABLE} <= tables
    assert status(database)["pending"] == []


def test_given_a_migrated_database_when_migrating_again_then_nothing_is_applied(database):
    migrate(database)
    again = migrate(database)
    assert again.applied == []
    assert again.current == status(database)["current"]


def test_given_a_version_to_stop_at_when_migrating_then_only_the_files_up_to_it_apply(database):
    names = [m.name for m in load_migrations(dialect(database))]
    first = migrate(database, to=3)
    assert (first.applied, first.current) == (names[:3], 3)
    assert status(database)["pending"] == names[3:]
    rest = migrate(database)
    assert (rest.applied, rest.current) == (names[3:], len(names))


def test_given_two_processes_when_both_migrate_at_once_then_both_succeed_and_each_file_applies_once(empty_url):
    env = {**os.environ, "CHIMEWAY_DATABASE_URL": empty_url}
    env.pop("CHIMEWAY_REDIS_URL", None)
    command = [sys.executable, "-m", "chimeway.ops.cli", "migrate", "--json"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    applied = [name for output in outputs for name in json.loads(output)["applied"]]
    database = dbmod.connect(load_settings(environ={}, database_url=empty_url))
    expected = [m.name for m in load_migrations(dialect(database))]
    assert sorted(applied) == sorted(expected)  # each file applied by exactly one of the two
    rows = database.execute_sql(f"SELECT COUNT(*) FROM {HISTORY_TABLE}").fetchone()[0]
    assert rows == len(expected)
    database.close()


def test_given_an_applied_file_that_changed_when_migrating_then_it_is_refused(database):
    migrate(database)
    database.execute_sql(
        dbmod.sql(f"UPDATE {HISTORY_TABLE} SET checksum = %s WHERE version = 1", database), ("0" * 64,)
    )
    with pytest.raises(MigrationError, match="0001_initial has changed"):
        migrate(database)


def test_given_a_database_newer_than_the_code_when_migrating_then_it_is_refused(database):
    migrate(database)
    database.execute_sql(
        dbmod.sql(f"INSERT INTO {HISTORY_TABLE} (version, name, checksum) VALUES (%s, %s, %s)", database),
        (9999, "9999_future", "f" * 64),
    )
    with pytest.raises(MigrationError, match="newer than the code"):
        migrate(database)


def test_the_schema_built_by_migrations_matches_the_models(database):
    migrate(database)
    for model in ALL_MODELS:
        table = model._meta.table_name
        columns = {c.name: c for c in database.get_columns(table)}
        fields = {f.column_name: f for f in model._meta.sorted_fields}
        assert set(columns) == set(fields), table
        for name, field in fields.items():
            assert columns[name].null == field.null or name == model._meta.primary_key.column_name, (table, name)
            if dbmod.is_postgres(database):
                assert _pg_type(columns[name].data_type) == _model_type(field), (table, name)


def _pg_type(data_type: str) -> str:
    return {"timestamp with time zone": "timestamptz", "character varying": "text"}.get(data_type, data_type)


def _model_type(field: peewee.Field) -> str:
    return {
        "UUID": "uuid", "TIMESTAMPTZ": "timestamptz", "JSONB": "jsonb", "TEXT": "text", "INT": "integer",
        "BOOL": "boolean", "BLOB": "bytea",
    }[field.field_type]


def _delivery(**overrides) -> Delivery:
    values = {"notification_id": str(uuid.uuid4()), "channel": "email", "recipient": "r@example.com", "adapter": "log"}
    values.update(overrides)
    return Delivery.create(**values)


def _attempt(delivery: Delivery) -> Attempt:
    return Attempt.create(delivery_id=delivery.id, attempt_number=1, outcome="succeeded", adapter="log")


def _event(**overrides) -> Event:
    values = {"type": "delivered", "provider": "fake", "occurred_at": datetime.now(UTC)}
    values.update(overrides)
    return Event.create(**values)


@pytest.mark.parametrize("table", ["attempts", "events"])
@pytest.mark.parametrize("operation", ["update", "delete"])
def test_given_an_append_only_table_when_a_row_is_changed_then_45A01_is_raised(database, table, operation):
    migrate(database)
    row = _attempt(_delivery()) if table == "attempts" else _event()
    model = type(row)
    query = (
        model.update(adapter="changed") if (table, operation) == ("attempts", "update")
        else model.update(type="opened") if operation == "update"
        else model.delete()
    ).where(model.id == row.id)
    with pytest.raises(EventLedgerImmutableError, match="45A01|append-only"):
        with dbmod.translate_errors():
            query.execute()
    # The raw driver error carries the SQLSTATE (PostgreSQL) or names it (SQLite).
    raw_sql = f"DELETE FROM {model._meta.table_name}"
    with pytest.raises((peewee.DatabaseError, sqlite3.DatabaseError)) as caught:
        database.execute_sql(raw_sql)
    assert dbmod.is_append_only_violation(caught.value)
    assert model.select().count() == 1


def test_two_null_idempotency_keys_are_allowed_and_two_equal_ones_refused(database):
    migrate(database)
    _delivery()
    _delivery()
    _delivery(idempotency_key="order-1")
    _delivery(idempotency_key="order-1", tenant_id="other")  # another tenant may reuse the key
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            _delivery(idempotency_key="order-1")
    assert Delivery.select().count() == 4


def test_two_deliveries_cannot_share_a_provider_message_id_but_may_share_none(database):
    migrate(database)
    _delivery(provider="postmark")
    _delivery(provider="postmark")
    _delivery(provider="postmark", provider_message_id="pm-1")
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            _delivery(provider="postmark", provider_message_id="pm-1")


def test_one_delivery_per_channel_per_notification(database):
    migrate(database)
    first = _delivery()
    _delivery(notification_id=first.notification_id, channel="sms")
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            _delivery(notification_id=first.notification_id, channel="email")


def test_ledger_idempotency_keys_are_unique_and_nulls_allowed(database):
    migrate(database)
    _event()
    _event()
    _event(idempotency_key="postmark:evt-1:0")
    # SQLite's unique index refuses the second; PostgreSQL's key table (0009) skips it, as ON CONFLICT
    # DO NOTHING would: either way it is never stored.
    try:
        with database.atomic():
            _event(idempotency_key="postmark:evt-1:0")
    except peewee.IntegrityError:
        assert dialect(database) == "sqlite"
    assert Event.select().where(Event.idempotency_key == "postmark:evt-1:0").count() == 1
    assert Event.select().count() == 3


@pytest.mark.parametrize(
    ("column", "value"),
    [("status", "sent"), ("orchestration_state", "sleeping")],
)
def test_check_constraints_reject_unknown_delivery_vocabulary(database, column, value):
    migrate(database)
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            _delivery(**{column: value})


def test_check_constraints_reject_unknown_event_types_and_attempt_outcomes(database):
    migrate(database)
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            _event(type="teleported")
    delivery = _delivery()
    with pytest.raises(peewee.IntegrityError):
        with database.atomic():
            Attempt.create(delivery_id=delivery.id, attempt_number=1, outcome="maybe", adapter="log")


def test_every_status_in_code_is_accepted_by_the_schema(database):
    migrate(database)
    for status_value in Status:
        _delivery(status=status_value.value)
    assert Delivery.select().count() == len(Status)


def test_every_vocabulary_value_in_code_is_accepted_by_the_schema(database):
    migrate(database)
    delivery = _delivery()
    for number, (outcome, error_class) in enumerate(
        [(o.value, None) for o in AttemptOutcome] + [("failed", e.value) for e in ErrorClass], start=1
    ):
        Attempt.create(delivery_id=delivery.id, attempt_number=number, outcome=outcome, error_class=error_class,
                       adapter="log")
    for event_type in EventType:
        _event(type=event_type.value)
    for reason in RejectReason:
        _event(type="rejected", reject_reason=reason.value)
    for reason in SuppressionReason:
        Suppression.create(channel="email", address=f"{reason.value}@example.com", reason=reason.value)
    for state in Orchestration:
        _delivery(orchestration_state=state.value)
    assert Event.select().count() == len(EventType) + len(RejectReason)
    assert Attempt.select().count() == len(AttemptOutcome) + len(ErrorClass)
    assert Suppression.select().count() == len(SuppressionReason)


def test_timestamps_round_trip_as_aware_utc(database):
    migrate(database)
    moment = datetime(2026, 3, 8, 6, 59, 59, 123456, tzinfo=UTC)
    created = _delivery(next_attempt_at=moment)
    loaded = Delivery.get_by_id(created.id)
    assert loaded.next_attempt_at == moment
    assert loaded.next_attempt_at.tzinfo is not None
    assert loaded.payload == {}


def dialect(database: peewee.Database) -> str:
    return "postgres" if dbmod.is_postgres(database) else "sqlite"
