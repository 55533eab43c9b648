"""Chimeway: reliable notification delivery on Dramatiq, PostgreSQL and Redis.

Record a delivery inside your own transaction with :func:`send`; Dramatiq workers
(``dramatiq chimeway.worker``) perform it through a provider adapter, retry transient failures and
always converge it to a terminal state that explains itself. Importing ``chimeway`` does no work:
names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> "module:attribute" it lives at
_EXPORTS = {
    "configure": "chimeway.wiring.runtime:configure",
    "migrate": "chimeway.api:migrate",
    "send": "chimeway.api:send",
    "send_many": "chimeway.api:send_many",
    "get_delivery": "chimeway.store.deliveries:get_delivery",
    "attempts": "chimeway.store.deliveries:attempts",
    "cancel": "chimeway.store.deliveries:cancel",
    "mark_read": "chimeway.store.deliveries:mark_read",
    "timeline": "chimeway.ops.history:timeline",
    "redrive": "chimeway.api:redrive",
    "reconcile": "chimeway.api:reconcile",
    "sweep": "chimeway.api:sweep",
    "database": "chimeway.db:proxy",
    "InvalidSendError": "chimeway.errors:InvalidSendError",
    "IdempotencyConflictError": "chimeway.errors:IdempotencyConflictError",
    "NotRedrivableError": "chimeway.errors:NotRedrivableError",
}

#: submodules reachable as attributes without an import of their own (``chimeway.preferences.set``)
_SUBMODULES = ("errors", "metrics", "policy", "preferences", "suppressions", "telemetry", "testing", "webhooks")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"chimeway.{name}")
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'chimeway' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
