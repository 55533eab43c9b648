"""The lanes: which queue and which deliver actor a delivery of each priority goes to.

Names only (no actor is declared here): the actors, the enqueue, the middleware and the broker all
read them, so they sit below all four (docs/architecture.md §5, §9).
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from chimeway.states import Priority

#: The normal lane's deliver actor name (a Chimeway-owned name, so a shared broker has no clash).
DELIVER_ACTOR = "chimeway_deliver"

#: The queue Chimeway's actors use (its own, so a shared broker keeps application work apart); also
#: the normal lane's.
QUEUE = "chimeway"


@dataclass(frozen=True)
class Lane:
    """Where a delivery of one priority goes: its queue, and the deliver actor that names it.

    A Dramatiq worker puts what every consumer fetched in one in-process priority queue ordered by
    the *actor's* priority (lower first), then by arrival; so each lane has its own actor (the same
    function), and a free worker thread takes a waiting high message before any prefetched bulk one
    (docs/architecture.md §9)."""

    queue: str
    actor_name: str
    #: Dramatiq's actor priority: lower is served first
    order: int


#: Every lane. The normal lane keeps the names of the single queue that came before lanes, so messages
#: already enqueued by an older version are still consumed.
LANES = {
    Priority.HIGH: Lane("chimeway_high", f"{DELIVER_ACTOR}_high", 0),
    Priority.NORMAL: Lane(QUEUE, DELIVER_ACTOR, 10),
    Priority.BULK: Lane("chimeway_bulk", f"{DELIVER_ACTOR}_bulk", 20),
}

#: The deliver actor of each lane, by actor name (the middleware recognizes deliver messages by it).
DELIVER_ACTORS = frozenset(lane.actor_name for lane in LANES.values())


def lane_actor(actors: dict[str, dramatiq.Actor], priority: str) -> dramatiq.Actor:
    """The deliver actor of ``priority``'s lane."""
    return actors["deliver" if priority == Priority.NORMAL else f"deliver_{priority}"]
