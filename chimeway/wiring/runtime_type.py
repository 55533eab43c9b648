"""The Runtime type: what one configured process is wired from.

A module of its own so that everything below the entry points can name the type of the runtime it
receives without importing :mod:`chimeway.wiring.runtime`, which wires the dispatch layer and is
looked up only by the entry points (docs/architecture.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import peewee

from chimeway.wiring.config import Settings
from chimeway.wiring.registry import Registry


@dataclass
class Runtime:
    settings: Settings
    database: peewee.Database
    registry: Registry
    owns_database: bool  #: False when the application handed us its own database
    #: Wired by chimeway.dispatch: the Dramatiq broker, the Redis client (None in embedded mode) and actors.
    broker: Any = None
    redis: Any = None
    actors: dict[str, Any] = field(default_factory=dict)
    #: SET NX with expiry (chimeway.store.setnx): in Redis, or in memory under the stub broker.
    setnx: Any = None
    #: Rate limits, circuits and failover of chimeway.dispatch.resilience: Redis-backed, or in memory.
    guard: Any = None
    #: The worker's group commits of claims and records (chimeway.dispatch.batch); None: one by one.
    batches: Any = None

    def close(self) -> None:
        self.registry.close()
        if self.broker is not None:
            self.broker.close()
        if self.redis is not None:
            self.redis.close()
        if self.owns_database and not self.database.is_closed():
            close_all = getattr(self.database, "close_all", None)
            close_all() if close_all else self.database.close()
