"""The SQL forms of "open" and "terminal" name exactly the states of the enum, and the partial
indexes of the migrations use the same words (so a query written with them reads the index)."""

from __future__ import annotations

import re
from importlib import resources

from chimeway.states import OPEN_SQL, TERMINAL, TERMINAL_SQL, Status


def named(condition: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", condition))


def test_open_and_terminal_sql_partition_the_statuses():
    assert named(TERMINAL_SQL) == {status.value for status in TERMINAL}
    assert named(OPEN_SQL) == {status.value for status in Status} - named(TERMINAL_SQL)


def test_the_partial_indexes_are_declared_with_the_same_words_on_both_dialects():
    for dialect in ("postgres", "sqlite"):
        folder = resources.files("chimeway") / "migrations" / dialect
        schema = "".join(entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".sql"))
        assert f"WHERE {OPEN_SQL}" in schema and f"WHERE {TERMINAL_SQL}" in schema
