"""Group commit: the worker threads of one process share their claims and their records.

A thread that wants a statement run hands its request to a :class:`GroupCommit` and waits. When
fewer than ``max_batches`` batches are running, that thread leads one: its own request and every
request waiting (up to ``max_size``) as one statement with one commit; then it hands each thread its
answer, and the lead to the first request still waiting. Requests that arrive while the batches run
wait and go in the next one, so batches form by themselves under load and a lone thread runs its
request at once, as it would without batching (docs/architecture.md §5, §9). ``max_batches`` above one
lets a batch gather and run beside a slow one.

A leader may linger up to ``max_wait_ms`` for the batch to fill, and only when that is worth it: the
previous batch held more than one request (other threads are busy) and requests have been arriving
well under ``max_wait_ms`` apart (an average kept as they come); it stops as soon as the next request
is later than twice that gap. A quiet worker, or one busy thread, never waits. No request waits
longer than the batch before it, its lingering and its own batch.

When the batch statement fails, every request in it gets :data:`ALONE` and its thread runs its own
statement: one bad row cannot fail its neighbours, and a failure that is not a row's (the database
unreachable) reaches each thread as it would without batching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from chimeway.dispatch.resilience import Go, Guard, Wait
from chimeway.models import Delivery
from chimeway.store import deliveries
from chimeway.wiring.config import Settings

__all__ = ["ALONE", "Batches", "GroupCommit", "Started", "start_alone"]

logger = logging.getLogger("chimeway.dispatch")

Request = TypeVar("Request")


class _Alone:
    def __repr__(self) -> str:
        return "ALONE"


#: The answer to a request whose batch failed: run it on its own.
ALONE: Any = _Alone()


class _Slot:
    """One request: its answer, and a lock its thread blocks on until the answer is in, or until it is
    handed the lead (a bare lock, released once, by the one thread that answers or hands over: the
    cheapest wake-up of one thread; a shared Condition's notify_all woke every waiting thread after
    every batch)."""

    __slots__ = ("answer", "done", "request", "wake")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.answer: Any = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[Request]):
    """Runs the requests of many threads as batches of ``run_batch(requests) -> answers`` (one answer
    per request, in order), at most ``max_batches`` at a time."""

    def __init__(self, name: str, run_batch: Callable[[Sequence[Request]], Sequence[Any]], *, max_size: int,
                 max_wait_ms: float, max_batches: int = 1) -> None:
        self.name = name
        self.run_batch = run_batch
        self.max_size = max(1, max_size)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.max_batches = max(1, max_batches)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  #: a lingering leader waits on it
        self._waiting: list[_Slot] = []  #: requests no leader holds yet
        self._leaders = 0  #: batches being gathered or run
        self._lingering = 0
        self._last_size = 0
        self._last_arrival = 0.0
        self._gap = float("inf")  #: moving average of the time between two requests' arrivals
        #: batches run, requests answered, and batches whose leader lingered (for the bench and the tests)
        self.batches = 0
        self.requests = 0
        self.lingered = 0

    def submit(self, request: Request) -> Any:
        """This request's answer, or :data:`ALONE` when its batch failed."""
        slot = _Slot(request)
        with self._lock:
            arrived = time.monotonic()
            self._gap = min(arrived - self._last_arrival, self._gap * 0.8 + (arrived - self._last_arrival) * 0.2)
            self._last_arrival = arrived
            lead = self._leaders < self.max_batches
            if lead:
                self._leaders += 1
            else:
                self._waiting.append(slot)
                if self._lingering:
                    self._arrived.notify()
        if not lead:
            slot.wake.acquire()  # answered, or handed the lead of the next batch
            if slot.done:
                return slot.answer
        try:
            self._run(self._take(slot))  # a leader's own request always goes in its batch
        finally:  # even when the leader is interrupted: the lead passes on, nobody waits forever
            with self._lock:
                successor = self._waiting.pop(0) if self._waiting else None
                if successor is None:
                    self._leaders -= 1
            if successor is not None:
                successor.wake.release()  # it finds itself not done, and leads the next batch
        return slot.answer

    def _take(self, own: _Slot) -> list[_Slot]:
        """The leader's batch: its own request and those waiting, after lingering when the last batch
        was shared.

        The leader waits for the next request no longer than twice the usual gap between two (the
        moving average): a burst of threads is gathered, then the batch goes as soon as the burst
        is over, and never later than ``max_wait`` after the leader began."""
        room = self.max_size - 1
        with self._lock:
            worth_it = self._last_size > 1 and 2 * self._gap < self.max_wait
            if worth_it and len(self._waiting) < room:
                deadline = time.monotonic() + self.max_wait
                self._lingering += 1
                self.lingered += 1
                while len(self._waiting) < room:
                    left = min(deadline, self._last_arrival + 2 * self._gap) - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
                self._lingering -= 1
            batch = [own, *self._waiting[:room]]
            del self._waiting[:room]
            self._last_size = len(batch)
            return batch

    def _run(self, batch: list[_Slot]) -> None:
        """Run one batch and hand out the answers (waking every thread but the leader)."""
        answers = [ALONE] * len(batch)  # also what the others get if the leader is interrupted (time limit)
        try:
            answered = list(self.run_batch([slot.request for slot in batch]))
            if len(answered) != len(batch):
                raise RuntimeError(f"{self.name}: {len(answered)} answers for {len(batch)} requests")
            answers = answered
        except Exception as err:
            _failed(self.name, len(batch), err)
        finally:
            with self._lock:
                self.batches += 1
                self.requests += len(batch)
            for slot, answer in zip(batch, answers, strict=True):
                slot.answer, slot.done = answer, True
                if slot is not batch[0]:  # the leader's own slot: its thread is right here
                    slot.wake.release()


@dataclass(frozen=True)
class Started:
    """A delivery admitted by the guard and loaded, claimed (``attempt``) or not (None: the policy decides)."""

    go: Go
    delivery: Delivery | None
    attempt: int | None
    #: loaded by its own statement after its batch's claim statement failed: that statement may have
    #: committed (only its answer lost), so a claim with this try's own lease is this try's
    after_failed_batch: bool = False


@dataclass(frozen=True)
class _Admitted:
    """The guard let this delivery go, but its batch's claim statement failed."""

    go: Go


#: Claim (and record) batches one worker process runs at a time. Two (one gathering while the other
#: runs) measured slower in make bench on this 2-core machine: half-size batches, 1.15 statements per
#: delivery instead of 0.75, and the database's CPU went up more than the waiting went down.
BATCHES_AT_ONCE = 1


class Batches:
    """The group commits of one worker process (PostgreSQL only): the start of an attempt (the guard's
    admission and the load-and-claim) and its record. Each answers as its one-delivery counterpart
    does, which it falls back to when a batch fails."""

    def __init__(self, settings: Settings, guard: Guard) -> None:
        self.guard = guard
        self.lease_seconds = settings.lease_seconds
        size, wait = settings.group_commit_max, settings.group_commit_wait_ms
        self.starts: GroupCommit[tuple[str, datetime, str, str]] = GroupCommit(
            "claim batch", self._start_many, max_size=size, max_wait_ms=wait, max_batches=BATCHES_AT_ONCE)
        self.records: GroupCommit[deliveries.Recording] = GroupCommit(
            "record batch", deliveries.record_many, max_size=size, max_wait_ms=wait, max_batches=BATCHES_AT_ONCE)

    def start(self, delivery_id: str, now: datetime, origin: str, route: str) -> Started | Wait:
        """Admit (along ``route`` from ``origin``), load, and claim when the loaded facts clear it."""
        answer = self.starts.submit((delivery_id, now, origin, route))
        if isinstance(answer, Started | Wait):
            return answer
        # alone: the guard's round trip failed for the batch (ALONE: ask it again), the batch's claim
        # statement failed (_Admitted), or the batch held this id twice (Go: claim after it)
        failed = isinstance(answer, _Admitted)
        go = answer.go if failed else answer if isinstance(answer, Go) else None
        return start_alone(self.guard, delivery_id, now, origin, route, lease_seconds=self.lease_seconds, go=go,
                           after_failed_batch=failed)

    def write(self, entry: deliveries.Recording) -> Sequence[Any] | None:
        """:func:`chimeway.store.deliveries.write`, in this process's next record batch."""
        answer = self.records.submit(entry)
        return deliveries.write(entry) if answer is ALONE else answer

    def _start_many(self, requests: Sequence[tuple[str, datetime, str, str]]) -> list[Any]:
        decisions: list[Any] = self.guard.admit_many([(origin, route) for _, _, origin, route in requests])
        batch, seen = [], set()
        for index, ((delivery_id, _, _, _), decision) in enumerate(zip(requests, decisions, strict=True)):
            if isinstance(decision, Go) and delivery_id not in seen:  # a repeated id claims alone, after
                seen.add(delivery_id)
                batch.append(index)
        if not batch:
            return decisions
        try:
            loaded = deliveries.load_and_claim_many(
                [(requests[index][0], requests[index][1]) for index in batch], lease_seconds=self.lease_seconds)
        except Exception as err:  # each admitted delivery claims alone (its Go kept: no second admission)
            _failed(self.starts.name, len(batch), err)
            loaded = None
        for place, index in enumerate(batch):
            decisions[index] = _Admitted(decisions[index]) if loaded is None else Started(decisions[index], *loaded[place])
        return decisions


def start_alone(
    guard: Guard, delivery_id: str, now: datetime, origin: str, route: str, *, lease_seconds: int,
    go: Go | None = None, after_failed_batch: bool = False,
) -> Started | Wait:
    """The one-delivery start: the guard's decision (unless ``go`` was given) and, when it says go,
    the delivery loaded and, if its facts clear it, claimed by the same statement."""
    decision = go or guard.admit(origin, route)
    if isinstance(decision, Wait):
        return decision
    return Started(decision, *deliveries.load_and_claim(delivery_id, now, lease_seconds=lease_seconds),
                   after_failed_batch)


def _failed(name: str, size: int, err: Exception) -> None:
    """One line for a failed batch; the traceback at DEBUG: each request's own statement follows, and
    if it fails too, its message's failure is logged by Dramatiq with that traceback. The error's
    message is not logged (a database error may quote a value of the row)."""
    logger.warning("%s of %d failed (%s); each runs its own statement", name, size, type(err).__name__)
    logger.debug("%s failed", name, exc_info=True)
