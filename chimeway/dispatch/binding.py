"""Declaring an actor on a broker, bound to one runtime; and what every periodic job's actor does
when its run fails.

An actor's body receives the runtime it was declared for as its first argument: no actor looks the
runtime up (docs/architecture.md §2). A broker wired again (``configure(broker=...)`` with the same
broker) keeps its actors, whose messages then run against the new runtime.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import dramatiq

from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.dispatch")


def bind(
    broker: dramatiq.Broker, runtime: Runtime, body: Callable[..., Any], *, actor_name: str, queue: str,
    order: int, options: dict[str, Any],
) -> dramatiq.Actor:
    """The actor ``actor_name`` on ``broker``; a message's arguments run ``body(runtime, *args)``."""

    @functools.wraps(body)  # Dramatiq names the actor's logger after the body's module
    def bound(*args: Any, **kwargs: Any) -> Any:
        return body(runtime, *args, **kwargs)

    existing = broker.actors.get(actor_name)
    if existing is not None:
        existing.fn = bound
        return existing
    return dramatiq.Actor(bound, broker=broker, actor_name=actor_name, queue_name=queue, priority=order,
                          options=dict(options))


def run_periodic(job: str, run: Callable[[], Any]) -> None:
    """Run a scheduled job; a failed run is logged and completed, never dead-lettered.

    The scheduler enqueues the job again on its next tick, so a retry would only race it; and a
    dead letter (the job's max_retries is 0) reads as a lost message where nothing was lost. Seen in
    ``make chaos``: a sweep that ran while PostgreSQL restarted left one dead letter in ~1 run of 8.
    """
    try:
        run()
    except Exception:
        logger.error("%s failed; the scheduler's next tick runs it again", job, exc_info=True)


#: A periodic job's actor options: no Dramatiq retry (see :func:`run_periodic`).
PERIODIC_OPTIONS: dict[str, Any] = {"max_retries": 0}
