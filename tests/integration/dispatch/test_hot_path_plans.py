"""The worker's prepared statements look each delivery up by its key whatever the statistics say.

Chimeway's sessions run prepared statements with their generic plan (``plan_cache_mode``, see
chimeway/db.py). After an ANALYZE that saw almost nothing open — a quiet moment, or a loaded table
whose open deliveries are a thousandth of it — that plan preferred the open-deliveries index for a
guard like ``status IN ('pending', 'failed')`` and read every open delivery (measured: 1.2 ms a
claim batch of four against 0.24 ms, drains 20 % slower; README "Scale")."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from chimeway import db
from chimeway.store import deliveries, migrator
from chimeway.wiring.config import load_settings

pytestmark = pytest.mark.postgres

#: Every prepared statement of the store's hot path (insert, load, claim, record, one and many).
STATEMENTS = {name: value for name, value in vars(deliveries).items() if isinstance(value, db.Statement)}


@pytest.fixture
def analyzed_while_quiet(pg_empty_url: str) -> Iterator[psycopg2.extensions.cursor]:
    """A database whose statistics were taken with 2,000 finished deliveries and none open, and
    which then got 300 open ones (the moment before the next autovacuum's ANALYZE)."""
    database = db.connect(load_settings(environ={}, database_url=pg_empty_url))
    migrator.migrate(database)
    database.close_all()
    conn = psycopg2.connect(pg_empty_url, options=db.session_options())
    conn.autocommit = True
    cur = conn.cursor()
    fill = ("INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status) "
            "SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'r' || g || '@example.com', 'log', %s "
            "FROM generate_series(1, %s) AS g")
    cur.execute(fill, ("succeeded", 2000))
    cur.execute("ANALYZE chimeway_deliveries")
    cur.execute(fill, ("pending", 300))
    yield cur
    conn.close()


def generic_plan(cur: psycopg2.extensions.cursor, statement: db.Statement) -> str:
    cur.execute(statement.prepare_text)
    cur.execute("EXPLAIN " + statement.execute_text, [None] * statement.execute_text.count("%s"))
    return "\n".join(row[0] for row in cur.fetchall())


def test_the_store_has_its_hot_path_statements():
    assert {"_LOAD_AND_CLAIM_MANY", "_RECORD_MANY", "_RECORD_BOTH", "_CLAIM", "_LOAD"} <= STATEMENTS.keys()


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_given_statistics_taken_with_nothing_open_then_the_generic_plan_reads_deliveries_by_key(
    analyzed_while_quiet, name
):
    cur = analyzed_while_quiet
    cur.execute("SHOW plan_cache_mode")
    assert cur.fetchone()[0] == "force_generic_plan"
    plan = generic_plan(cur, STATEMENTS[name])
    reads = [line.strip() for line in plan.splitlines() if " on chimeway_deliveries" in line]
    assert "chimeway_deliveries_open" not in plan, plan
    assert all("chimeway_deliveries_pkey" in line for line in reads if "Scan" in line), plan
