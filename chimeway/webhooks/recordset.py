"""Many rows as one JSON parameter, read back as a relation: set-based SQL without giant VALUES lists.

PostgreSQL reads it with ``json_to_recordset``, SQLite with ``json_each``; the statement around it
is the same on both. One parameter of a few megabytes parses far faster than tens of thousands of
placeholders, which is what lets reconcile link tens of thousands of orphans per second.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import peewee

from chimeway import db as dbmod


def relation(database: peewee.Database, columns: Mapping[str, str], alias: str = "v") -> str:
    """``FROM``-clause text for one ``%s`` parameter holding a JSON list of objects.

    In ``INSERT … SELECT … ON CONFLICT`` give the SELECT a WHERE clause (``WHERE true``): SQLite
    otherwise reads ``ON`` as the start of a join constraint.

    ``columns`` maps each name to its PostgreSQL type (SQLite takes the JSON values as they are).
    """
    if dbmod.is_postgres(database):
        spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        return f"json_to_recordset(%s::json) AS {alias}({spec})"
    picks = ", ".join(f"json_extract(value, '$.{name}') AS {name}" for name in columns)
    return f"(SELECT {picks} FROM json_each(%s)) AS {alias}"


def encode(rows: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), separators=(",", ":"), default=str)


def timestamp(value: Any, database: peewee.Database) -> Any:
    """A timestamp as text the dialect compares correctly (ISO on PostgreSQL, sortable text on SQLite)."""
    if value is None:
        return None
    stored = dbmod.to_db_time(value, database)
    return stored if isinstance(stored, str) else stored.isoformat()
