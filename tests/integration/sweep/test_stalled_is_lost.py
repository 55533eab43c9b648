"""``chimeway status``'s stalled count and the sweep read one definition of a lost delivery."""

from __future__ import annotations

from chimeway.api import sweep
from chimeway.ops.status import collect
from chimeway.states import Orchestration, Status

#: Older than the default stall threshold (120 s).
STALE = 600


def test_given_live_leases_and_future_retries_when_status_counts_stalled_then_it_counts_what_the_sweep_re_enqueues(
    configured, lost
) -> None:
    # Given rows unchanged for ten minutes that nobody has lost: a dispatched row under a live lease,
    # a failed row whose retry is due in the future, a deferred row not due yet
    lost(status=Status.DISPATCHED, attempt_count=1, lease=-300, updated=STALE, enqueued=STALE)
    lost(status=Status.FAILED, attempt_count=1, next_attempt=-600, updated=STALE, enqueued=STALE)
    lost(status=Status.PENDING, orchestration_state=Orchestration.DEFERRED, next_eligible=-600, updated=STALE)
    # and two rows that are lost: a pending row never enqueued, a dispatched row whose lease expired
    lost(status=Status.PENDING, updated=STALE, enqueued=None)
    lost(status=Status.DISPATCHED, attempt_count=1, lease=STALE, updated=STALE, enqueued=STALE)
    # When status reports before the sweep runs
    stalled = collect(configured)["stalled"]
    # Then it counts exactly the deliveries the sweep then re-enqueues
    assert stalled == sweep().reenqueued == 2
    # and afterwards nothing is stalled (their messages are in flight)
    assert collect(configured)["stalled"] == 0
