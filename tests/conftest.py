"""Shared fixtures for Chimeway's own tests: real PostgreSQL and Redis, each test isolated.

- PostgreSQL: one database per test session (created, migrated, dropped); each test starts from
  empty tables (TRUNCATE — the append-only triggers refuse row-level DELETE, not TRUNCATE).
  ``CHIMEWAY_TEST_POSTGRES`` overrides the server URL (default postgresql://postgres@127.0.0.1:5432).
- Redis: each test gets its own key namespace on database 15, removed afterwards
  (``CHIMEWAY_TEST_REDIS`` overrides the server URL).
- ``configured``: Chimeway configured on each dialect in turn (parametrized: sqlite, postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis as redis_lib

from chimeway.models import ALL_MODELS
from chimeway.store.migrator import migrate
from chimeway.wiring import runtime as runtime_mod

PG_SERVER = os.environ.get("CHIMEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("CHIMEWAY_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _admin_connection() -> Any:
    conn = psycopg2.connect(f"{PG_SERVER}/postgres")
    conn.autocommit = True
    return conn


def create_pg_database(prefix: str = "chimeway_test") -> str:
    """Create an empty database with a unique name and return its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = _admin_connection()
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = _admin_connection()
    try:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (for migration tests), dropped afterwards."""
    url = create_pg_database("chimeway_empty")
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    url = create_pg_database()
    from chimeway.db import connect
    from chimeway.wiring.config import load_settings

    database = connect(load_settings(environ={}, database_url=url))
    migrate(database)
    database.close_all()
    yield url
    drop_pg_database(url)


@pytest.fixture
def pg_url(pg_session_url: str) -> str:
    """The session's migrated PostgreSQL database, with every table emptied for this test."""
    conn = psycopg2.connect(pg_session_url)
    conn.autocommit = True
    try:
        # chimeway_event_keys (0009) holds the ledger's idempotency keys: emptied with the ledger;
        # the outcome counts (0011) with the deliveries they count.
        derived = ("chimeway_event_keys", "chimeway_outcome_changes", "chimeway_outcome_hours")
        tables = ", ".join([*(model._meta.table_name for model in ALL_MODELS), *derived])
        conn.cursor().execute(f"TRUNCATE {tables}")
    finally:
        conn.close()
    return pg_session_url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A key namespace of our own on the test Redis database; every key under it is deleted after."""
    namespace = f"chimeway-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    client = redis_lib.Redis.from_url(REDIS_SERVER)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_SERVER


@pytest.fixture(params=["sqlite", "postgres"])
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(dialect: str, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of the parametrized dialect."""
    if dialect == "postgres":
        return request.getfixturevalue("pg_url")
    url = request.getfixturevalue("sqlite_url")
    from chimeway.db import connect
    from chimeway.wiring.config import load_settings

    database = connect(load_settings(environ={}, database_url=url))
    migrate(database)
    database.close()
    return url


@pytest.fixture
def configured(database_url: str) -> Iterator[runtime_mod.Runtime]:
    """Chimeway configured on the parametrized database with the in-memory broker."""
    runtime = runtime_mod.configure(database_url=database_url, redis_url="", environ={})
    yield runtime
    runtime_mod.reset()


@pytest.fixture
def registry() -> Iterator[Any]:
    """A private Prometheus registry with Chimeway's metrics installed (detached afterwards)."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from chimeway import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.install(registry)
    yield registry
    metrics.uninstall(registry)
