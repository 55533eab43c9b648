"""The live configuration of this process: settings → database → adapters → broker → actors.

``configure()`` is the one place that wires them (``chimeway.worker`` calls it for the Dramatiq
CLI). Nothing is wired at import time: the first use without ``configure()`` configures from the
environment. Only the entry points call :func:`current` (docs/architecture.md §2); everything below
them receives the :class:`~chimeway.wiring.runtime_type.Runtime` as an argument.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import peewee

from chimeway import db, policy
from chimeway.wiring.config import Settings, check_environment, load_settings
from chimeway.wiring.registry import Registry
from chimeway.wiring.runtime_type import Runtime

_current: Runtime | None = None
_lock = threading.RLock()


def configure(
    *,
    database: peewee.Database | None = None,
    broker: Any = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> Runtime:
    """Validate settings and wire everything; replaces (and closes) a previous configuration.

    ``database`` shares an application's Peewee database (its connections and transactions);
    ``broker`` uses an existing Dramatiq broker instead of building one from the settings.
    """
    global _current
    loaded: Settings = load_settings(environ, **settings)
    registry = Registry(loaded, environ)
    check_environment(os.environ if environ is None else environ, registry.variables)
    database_obj = database if database is not None else db.connect(loaded)
    db.use_prepared_statements(database_obj, loaded.db_prepared_statements)
    runtime = Runtime(settings=loaded, database=database_obj, registry=registry, owns_database=database is None)
    with _lock:
        previous, _current = _current, runtime
        db.bind(database_obj)
        policy.use_settings(loaded)
        from chimeway.dispatch.broker import wire  # late: the dispatch layer needs dramatiq

        wire(runtime, broker=broker)
    if previous is not None and previous is not runtime:
        previous.close()
    return runtime


def current() -> Runtime:
    """The configured runtime; configures from the environment on first use."""
    runtime = _current
    if runtime is None:
        with _lock:
            if _current is None:
                return configure()
            return _current
    return runtime


def reset() -> None:
    """Forget (and close) the current configuration: tests use it between cases."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous.close()
