"""Migration tests: an empty database of each dialect in turn."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_empty_url")
    return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
