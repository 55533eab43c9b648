"""Test helpers for applications that use Chimeway, also loaded as a pytest plugin.

Fixtures (available in any project that installs Chimeway):

- ``chimeway_sqlite_url`` — a migrated SQLite database in a temporary directory;
- ``chimeway_runtime`` — Chimeway configured on that database with the in-memory broker.

Nothing here runs at import: the plugin only declares fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def chimeway_sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'chimeway.sqlite3'}"


@pytest.fixture
def chimeway_runtime(chimeway_sqlite_url: str) -> Iterator[Any]:
    """Chimeway on a fresh, migrated SQLite database and the in-memory broker; reset afterwards."""
    from chimeway.migrator import migrate
    from chimeway.runtime import configure, reset

    runtime = configure(database_url=chimeway_sqlite_url, redis_url="", environ={})
    migrate(runtime.database)
    try:
        yield runtime
    finally:
        reset()
