"""Migration 0010 replaces PostgreSQL's foreign keys from attempts and ledger events to deliveries with
checks made once per statement (docs/architecture.md §9): they must refuse what the foreign keys
refused — a row naming a missing delivery, a delete or an id change leaving rows without their
delivery — on the parents, on partitions addressed directly and on partitions made later, and take
the same locks, so that a delete and an insert racing on one delivery cannot both succeed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee
import psycopg2
import pytest

from chimeway import db as dbmod
from chimeway.models import new_id
from chimeway.store import migrator
from chimeway.wiring import runtime as runtime_mod
from tests.migrations.conftest import database_at, fill_history

KEPT, BARE = str(uuid.uuid4()), str(uuid.uuid4())
ATTEMPT = (
    "INSERT INTO {table} (id, delivery_id, attempt_number, outcome, adapter, created_at) "
    "VALUES (%s, %s, 1, 'succeeded', 'log', %s)"
)
EVENT = "INSERT INTO {table} (id, delivery_id, type, provider, occurred_at, received_at) VALUES (%s, %s, 'opened', 'log', %s, %s)"


@pytest.fixture
def database(pg_empty_url: str) -> Iterator[peewee.Database]:
    """A database filled under schema 9 (a delivery with an attempt and an event), then migrated."""
    fill_history(database_at(pg_empty_url, 9), [(KEPT, "succeeded", 3)])
    runtime = runtime_mod.configure(database_url=pg_empty_url, redis_url="", environ={})
    try:
        assert migrator.migrate(runtime.database).applied[0] == "0010_delivery_references"
        dbmod.execute(
            "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status) "
            "VALUES (%s, %s, 'email', 'ann@example.com', 'log', 'succeeded')", (BARE, new_id()), runtime.database,
        )
        yield runtime.database
    finally:
        runtime_mod.reset()


def test_given_the_migration_then_no_foreign_key_is_left_and_existing_rows_still_name_their_delivery(database):
    constraints = dbmod.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid IN "
        "('chimeway_delivery_attempts'::regclass, 'chimeway_events'::regclass)", db=database,
    ).fetchall()
    assert constraints == []
    for table in ("chimeway_delivery_attempts", "chimeway_events"):
        assert dbmod.execute(f"SELECT CAST(delivery_id AS text) FROM {table}", db=database).fetchall() == [(KEPT,)]


@pytest.mark.parametrize("table", ["chimeway_delivery_attempts", "chimeway_delivery_attempts_legacy",
                                   "chimeway_events", "chimeway_events_legacy", "next month"])
def test_given_a_row_naming_a_missing_delivery_when_inserted_then_it_is_refused(database, table):
    now = datetime.now(UTC)
    at = now if table != "next month" else (now.replace(day=1) + timedelta(days=40))
    if table == "next month":  # a partition made by prune after the migration
        table = f"chimeway_events_p{at:%Y%m}"
        assert dbmod.execute("SELECT to_regclass(%s) IS NOT NULL", (table,), database).fetchone()[0]
    sql, params = (
        (ATTEMPT.format(table=table), (new_id(), str(uuid.uuid4()), at)) if "attempts" in table
        else (EVENT.format(table=table), (new_id(), str(uuid.uuid4()), at, at))
    )
    with pytest.raises(peewee.IntegrityError, match="names a delivery that does not exist"):
        with database.atomic():
            dbmod.execute(sql, params, database)
    # a row naming an existing delivery, and an orphan event naming none, are stored
    with database.atomic():
        if "attempts" in table:
            dbmod.execute(ATTEMPT.format(table=table), (new_id(), BARE, at), database)
        else:
            dbmod.execute(EVENT.format(table=table), (new_id(), BARE, at, at), database)
            dbmod.execute(EVENT.format(table=table), (new_id(), None, at, at), database)


@pytest.mark.parametrize("scattered", [False, True], ids=["range", "one-by-one"])
def test_given_a_delivery_rows_still_name_when_deleted_then_the_delete_is_refused(database, scattered):
    # Given, for the one-by-one path, many deliveries with rows between the two deleted ids (as random
    # UUIDv4 ids of an older installation are)
    lo, hi = sorted(uuid.UUID(i).int for i in (BARE, KEPT))
    if scattered:
        for k in range(1, 21):
            between = str(uuid.UUID(int=lo + (hi - lo) * k // 21))
            dbmod.execute(
                "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter) "
                "VALUES (%s, %s, 'email', 'x@example.com', 'log')", (between, new_id()), database,
            )
            dbmod.execute(ATTEMPT.format(table="chimeway_delivery_attempts"), (new_id(), between, datetime.now(UTC)),
                          database)
    # and two deliveries without rows just outside them, so that the one with rows is inside the range
    edges = [str(uuid.UUID(int=lo - 1)), str(uuid.UUID(int=hi + 1))]
    for edge in edges:
        dbmod.execute(
            "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter) "
            "VALUES (%s, %s, 'email', 'x@example.com', 'log')", (edge, new_id()), database,
        )
    # When a statement deletes deliveries without rows together with one that has them
    with pytest.raises(peewee.IntegrityError, match="still name a deleted delivery"):
        with database.atomic():
            dbmod.execute("DELETE FROM chimeway_deliveries WHERE id IN (%s, %s, %s, %s)", (BARE, KEPT, *edges), database)
    # Then neither is deleted; the delivery without rows can be
    assert dbmod.execute("SELECT count(*) FROM chimeway_deliveries WHERE id IN (%s, %s)", (BARE, KEPT), database
                         ).fetchone()[0] == 2
    with database.atomic():
        assert dbmod.execute("DELETE FROM chimeway_deliveries WHERE id = %s", (BARE,), database).rowcount == 1


def test_given_a_delivery_when_its_id_is_changed_then_it_is_refused(database):
    with pytest.raises(peewee.IntegrityError, match="chimeway_deliveries.id refused"):
        with database.atomic():
            dbmod.execute("UPDATE chimeway_deliveries SET id = %s WHERE id = %s", (str(uuid.uuid4()), KEPT), database)
    # other updates of the row are not concerned
    with database.atomic():
        assert dbmod.execute("UPDATE chimeway_deliveries SET id = id, metadata = '{}' WHERE id = %s", (KEPT,),
                             database).rowcount == 1


def _blocked(url: str) -> bool:
    conn = psycopg2.connect(url)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock')")
        return cursor.fetchone()[0]
    finally:
        conn.close()


def _race(url: str, first_sql: str, first_params: tuple, second_sql: str, second_params: tuple) -> Any:
    """Run ``first`` without committing, then ``second`` in another session until it waits for a lock,
    commit the first; what the second raised (or None)."""
    first, second = psycopg2.connect(url), psycopg2.connect(url)
    outcome: list[Any] = []

    def run_second() -> None:
        try:
            second.cursor().execute(second_sql, second_params)
            second.commit()
            outcome.append(None)
        except psycopg2.Error as err:
            second.rollback()
            outcome.append(err)

    try:
        first.cursor().execute(first_sql, first_params)
        waiting = threading.Thread(target=run_second)
        waiting.start()
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not _blocked(url):
            assert datetime.now(UTC) < deadline, "the second session never waited for the first"
            threading.Event().wait(0.01)
        first.commit()
        waiting.join(10)
        return outcome[0]
    finally:
        first.close()
        second.close()


def test_given_an_insert_not_committed_when_its_delivery_is_deleted_then_the_delete_waits_and_is_refused(
    database, pg_empty_url
):
    err = _race(pg_empty_url, ATTEMPT.format(table="chimeway_delivery_attempts"), (new_id(), BARE, datetime.now(UTC)),
                "DELETE FROM chimeway_deliveries WHERE id = %s", (BARE,))
    assert err is not None and err.pgcode == "23503"
    assert dbmod.execute("SELECT count(*) FROM chimeway_delivery_attempts WHERE delivery_id = %s", (BARE,),
                         database).fetchone()[0] == 1


def test_given_a_delete_not_committed_when_a_row_naming_its_delivery_is_inserted_then_the_insert_waits_and_is_refused(
    database, pg_empty_url
):
    at = datetime.now(UTC)
    err = _race(pg_empty_url, "DELETE FROM chimeway_deliveries WHERE id = %s", (BARE,),
                EVENT.format(table="chimeway_events"), (new_id(), BARE, at, at))
    assert err is not None and err.pgcode == "23503"
    assert dbmod.execute("SELECT count(*) FROM chimeway_events WHERE delivery_id = %s", (BARE,), database
                         ).fetchone()[0] == 0
