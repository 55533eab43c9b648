"""The public functions that need the runtime (``chimeway.send``, ``chimeway.sweep``…).

Each is the function of the layer below with the configured runtime handed in: the one
``configure()`` made, or one configured from the environment on first use. A caller may pass its
own ``runtime=`` instead. This is an entry point: only entry points look the runtime up
(docs/architecture.md §2); everything below receives it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import peewee

from chimeway.dispatch import bulk
from chimeway.dispatch import send as send_module
from chimeway.dispatch import sweep as sweep_module
from chimeway.ops import operations
from chimeway.store import migrator
from chimeway.webhooks import reconciler
from chimeway.wiring.runtime import current
from chimeway.wiring.runtime_type import Runtime

__all__ = ["migrate", "reconcile", "redrive", "send", "send_many", "sweep"]


def _given_or_current(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, whose ``runtime`` keyword defaults to the configured runtime."""

    @functools.wraps(function)
    def public(*args: Any, runtime: Runtime | None = None, **kwargs: Any) -> Any:
        return function(*args, runtime=runtime if runtime is not None else current(), **kwargs)

    signature = inspect.signature(function)
    public.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        parameter.replace(default=None, annotation="Runtime | None") if parameter.name == "runtime" else parameter
        for parameter in signature.parameters.values()
    ])
    return public


send = _given_or_current(send_module.send)
send_many = _given_or_current(bulk.send_many)
sweep = _given_or_current(sweep_module.sweep)
redrive = _given_or_current(operations.redrive)
reconcile = _given_or_current(reconciler.reconcile)


def migrate(db: peewee.Database | None = None) -> migrator.MigrateResult:
    """Bring the schema to the code's version (of ``db``, or the configured database). Safe to run
    twice, or from many processes at once."""
    return migrator.migrate(db if db is not None else current().database)
