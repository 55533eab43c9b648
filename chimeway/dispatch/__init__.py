"""Dispatch: send & enqueue, the actors, their middleware, the sweep and the broker wiring.

The actors exist per configured runtime (bound to its broker), so ``chimeway.dispatch.deliver``
and ``chimeway.dispatch.reconcile_orphans`` resolve to the current runtime's actors on access.
"""

from __future__ import annotations

from typing import Any

_ACTORS = ("deliver", "reconcile_orphans", "sweep_actor")


def __getattr__(name: str) -> Any:
    if name in _ACTORS:
        from chimeway.wiring.runtime import current

        return current().actors[name]
    raise AttributeError(f"module 'chimeway.dispatch' has no attribute {name!r}")
