"""The actors: ``deliver`` (one attempt of one delivery) and ``sweep_actor``.

``deliver(delivery_id)`` reads top to bottom as docs/architecture.md §5 draws it::

    load → short-circuit → policy → claim → adapter (outside any transaction) → classify → record
      → next attempt (a fresh message, due at the row's next_attempt_at) or convergence

On PostgreSQL, when the policy reads nothing but the facts loaded with the row
(``policy.decided_by_facts()``), load and claim are one statement for a delivery those facts clear
(``deliveries.load_and_claim``); any other delivery takes the whole path above.

Before anything is claimed, the runtime's guard (``chimeway.dispatch.resilience``) says which adapter
the attempt calls — rate limits, paused adapters, open circuits, failover — or how long to wait: a
wait is a fresh delayed message and spends no attempt. The message carries the adapters that
decision needs, so it is made before the load (the fast path stays one statement).

The row is the source of truth; the message carries only the id (and those adapter names). Actors
are declared per runtime by :func:`declare` (called from ``chimeway.dispatch.broker.wire``), never
at import time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from chimeway import db, policy, telemetry
from chimeway.adapter import SendRequest, SendResult
from chimeway.dispatch import backoff
from chimeway.dispatch.batch import Started, start_alone
from chimeway.dispatch.binding import PERIODIC_OPTIONS, bind, run_periodic
from chimeway.dispatch.enqueue import ADAPTER_OPTION, ROUTE_OPTION, enqueue
from chimeway.dispatch.lanes import LANES, QUEUE
from chimeway.dispatch.resilience import Go, Wait, next_adapter
from chimeway.dispatch.send import delay_until
from chimeway.dispatch.sweep import sweep
from chimeway.errors import BouncedError, DeliveryError, PermanentError, TemporaryError, UnhandledOutcomeError
from chimeway.models import Delivery
from chimeway.states import AttemptOutcome, ErrorClass, Priority, Reason, Status
from chimeway.store import deliveries
from chimeway.wiring import logcontext
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.dispatch")

#: Dramatiq's retries of one deliver message, for failures that spend no attempt (the database
#: unreachable while loading or recording, a pool timeout). Attempts are never retried by Dramatiq:
#: each one's failure sends a fresh message (``_retry_or_exhaust``), so this count and the durable
#: attempt count never share a budget. When these run out, the ExhaustionGuard takes over.
DRAMATIQ_MAX_RETRIES = 20

#: The deliver message's option noting the leases its tries' claims would write (see ``_note_lease``).
_LEASE_OPTION = "chimeway_lease_until"

@dataclass(frozen=True)
class Outcome:
    """What an attempt produced, classified (docs/architecture.md §5)."""

    outcome: AttemptOutcome
    error_class: ErrorClass | None
    #: succeeded / cancelled for settled outcomes; failed (retry or exhaust) for the rest
    status: Status
    reason: Reason | None = None

    @property
    def transient(self) -> bool:
        return self.status is Status.FAILED

    @property
    def unhandled(self) -> bool:
        return self.error_class is ErrorClass.UNKNOWN_CLASSIFICATION


def classify(result: Any) -> Outcome:
    """A SendResult, or the exception the adapter raised, as an Outcome."""
    if isinstance(result, SendResult):
        return Outcome(AttemptOutcome.SUCCEEDED, None, Status.SUCCEEDED)
    if isinstance(result, TemporaryError):
        return Outcome(AttemptOutcome.FAILED, ErrorClass.TEMPORARY, Status.FAILED)
    if isinstance(result, PermanentError):
        return Outcome(AttemptOutcome.REJECTED, ErrorClass.PERMANENT, Status.CANCELLED, Reason.PERMANENT_FAILURE)
    if isinstance(result, BouncedError):
        return Outcome(AttemptOutcome.BOUNCED, ErrorClass.BOUNCED, Status.CANCELLED, Reason.BOUNCED)
    return Outcome(AttemptOutcome.REJECTED, ErrorClass.UNKNOWN_CLASSIFICATION, Status.FAILED)


def deliver(runtime: Runtime, delivery_id: str) -> None:
    """Perform one attempt of one delivery (the body of the ``deliver`` actor, bound to ``runtime``)."""
    with logcontext.bind(delivery_id=delivery_id), telemetry.span("perform", delivery_id=delivery_id) as report:
        _deliver(runtime, str(delivery_id), report)


def _deliver(runtime: Runtime, delivery_id: str, report: dict[str, Any]) -> None:
    now = db.now()
    lease_seconds = runtime.settings.lease_seconds
    message = CurrentMessage.get_current_message()  # None when the actor is called directly
    lease_until = now + timedelta(seconds=lease_seconds)
    leases = _note_lease(message, lease_until)
    options = message.options if message is not None else {}
    go = None
    if policy.decided_by_facts() and ADAPTER_OPTION in options:
        # the guard is asked before the claim; a delivery the loaded facts clear is claimed by the
        # same statement (with other threads' deliveries, when the worker batches)
        started = _start(runtime, delivery_id, now, options)
        if isinstance(started, Wait):
            _wait(runtime, delivery_id, started, options.get(ROUTE_OPTION) or options[ADAPTER_OPTION], report)
            return
        go, delivery, attempt = started.go, started.delivery, started.attempt
        if started.after_failed_batch:  # that batch may have committed this try's claim (answer lost)
            leases.append(lease_until)
    else:
        delivery, attempt = deliveries.load(delivery_id, now), None  # with the facts the first rules need
    if delivery is None:
        logger.warning("delivery %s: no such delivery; message acknowledged", delivery_id)
        return
    report.update(tenant_id=delivery.tenant_id, channel=delivery.channel, adapter=delivery.adapter)
    logcontext.update(tenant=delivery.tenant_id, adapter=delivery.adapter)
    if attempt is None and _holds(delivery, leases, now):
        attempt = delivery.attempt_count
        go = go or Go(options.get(ROUTE_OPTION) or delivery.adapter)
        logger.info("delivery %s: attempt %d was claimed by an earlier try of this message that failed "
                    "before recording it; carrying it on", delivery_id, attempt)
    if attempt is None:
        claimed = _claim_after_policy(runtime, delivery, now, report, go, options)
        if claimed is None:
            return
        attempt, go = claimed
    logcontext.update(attempt=attempt, adapter=go.adapter)
    report.update(attempt=attempt, adapter=go.adapter)
    _attempt(runtime, delivery, attempt, report, go)


def _start(runtime: Runtime, delivery_id: str, now: datetime, options: Any) -> Started | Wait:
    """The guard's decision for this message's route and, when it says go, the delivery loaded and
    (if its facts clear it) claimed: in the worker's next claim batch, or alone."""
    origin = options[ADAPTER_OPTION]
    route = options.get(ROUTE_OPTION) or origin
    if runtime.batches is not None and deliveries.valid_id(delivery_id):
        return runtime.batches.start(delivery_id, now, origin, route)
    return start_alone(runtime.guard, delivery_id, now, origin, route, lease_seconds=runtime.settings.lease_seconds)


def _admit(runtime: Runtime, delivery_id: str, origin: str, options: Any, report: dict[str, Any]) -> Go | None:
    """The adapter this attempt may call now, or None when it must wait (see :func:`_wait`)."""
    route = options.get(ROUTE_OPTION) or origin
    decision = runtime.guard.admit(origin, route)
    if isinstance(decision, Go):
        return decision
    _wait(runtime, delivery_id, decision, route, report)
    return None


def _wait(runtime: Runtime, delivery_id: str, decision: Wait, route: str, report: dict[str, Any]) -> None:
    """No adapter may be called yet: a fresh message, due when the guard says, carries the route on
    (nothing was claimed, no attempt is spent)."""
    telemetry.emit("admission", "wait", delivery_id=delivery_id, adapter=decision.adapter, reason=decision.why)
    logger.debug("delivery %s: adapter %s %s; next try in %d ms (no attempt spent)", delivery_id, decision.adapter,
                 _WAITS[decision.why], decision.delay_ms)
    enqueue(delivery_id, delay_ms=decision.delay_ms, dedupe=False, runtime=runtime,
            route=decision.adapter if decision.why != "open" else route)
    report["waited"] = decision.why


#: How a wait reads in the worker's log.
_WAITS = {"rate": "is at its rate limit", "paused": "is paused (the provider asked to retry later)",
          "open": "has an open circuit, as has every adapter after it in its failover chain"}


def _note_lease(message: Any, lease_until: datetime) -> list[datetime]:
    """Note on the message, before claiming, the lease a claim by this try would write, and return
    the leases its earlier tries noted. A try can fail after its claim committed (the connection cut
    while the claim's answer, or the record, was on the wire): Dramatiq's retry of this message then
    recognizes its own claim by its lease and carries the attempt on, instead of leaving the claim to
    expire, which would spend an attempt and wait for the sweep. Every try's lease is kept (at most
    one per Dramatiq retry): a try that failed may have claimed without knowing it."""
    if message is None:
        return []
    earlier = list(message.options.get(_LEASE_OPTION, ()))
    message.options[_LEASE_OPTION] = [*earlier, lease_until.isoformat()]
    return [datetime.fromisoformat(noted) for noted in earlier]


def _holds(delivery: Delivery, leases: list[datetime], now: datetime) -> bool:
    """Whether the delivery is under a live claim that wrote one of ``leases``."""
    lease_until = delivery.lease_until
    return delivery.status == Status.DISPATCHED and lease_until is not None and lease_until > now and (
        lease_until in leases
    )


def _claim_after_policy(
    runtime: Runtime, delivery: Delivery, now: datetime, report: dict[str, Any], go: Go | None, options: Any
) -> tuple[int, Go] | None:
    """short-circuit → budget → policy → guard → claim: the attempt number and the adapter it calls,
    or None when this message must do nothing more (acknowledged, or sent again later by the guard)."""
    delivery_id = delivery.id
    skip = deliveries.why_not_claimable(delivery, now)
    if skip:
        logger.debug("delivery %s: %s; message acknowledged", delivery_id, skip)
        report["status"] = delivery.status
        if skip == deliveries.NOT_DUE and delivery.send_at is not None:
            _wait_more(runtime, delivery, now)
        return None
    if delivery.attempt_count >= delivery.max_attempts:
        if deliveries.exhaust(delivery_id, now=now):
            logger.warning("delivery %s: attempt budget spent; cancelled(retries_exhausted)", delivery_id)
        return None
    if not _apply_policy(runtime, delivery, now):
        return None
    go = go or _admit(runtime, delivery_id, options.get(ADAPTER_OPTION) or delivery.adapter, options, report)
    if go is None:
        return None
    attempt = deliveries.claim(delivery_id, lease_seconds=runtime.settings.lease_seconds, now=now)
    if attempt is None:
        logger.debug("delivery %s: not claimable (another message won it); acknowledged", delivery_id)
        return None
    return attempt, go


def _wait_more(runtime: Runtime, delivery: Delivery, now: datetime) -> None:
    """A scheduled delivery's message came early: its send time is further than one Dramatiq delay
    reaches (``enqueue.MAX_DELAY_MS``), so this message is one step of the wait; send the next."""
    delay_ms = delay_until(delivery.next_eligible_at)
    enqueue(delivery.id, delay_ms=delay_ms, dedupe=False, runtime=runtime)


def _apply_policy(runtime: Runtime, delivery: Delivery, now: datetime) -> bool:
    """Evaluate the policy and act on its decision; True when the delivery may be sent now."""
    decision = policy.evaluate(delivery, now)
    if isinstance(decision, policy.Suppress):
        deliveries.suppress(delivery.id, decision.reason, now=now)
        return False
    if isinstance(decision, policy.Defer):
        if deliveries.defer(delivery.id, decision.until, now=now):
            delay_ms = delay_until(decision.until)
            # The fresh-send dedupe mark may still be set: this re-enqueue is deliberate.
            enqueue(delivery.id, delay_ms=delay_ms, dedupe=False, runtime=runtime)
        return False
    return True


def _attempt(runtime: Runtime, delivery: Delivery, attempt: int, report: dict[str, Any], go: Go) -> None:
    """Call the adapter outside any transaction, classify, record; then the next attempt or convergence."""
    adapter = go.adapter
    result, duration_ms = _call_adapter(runtime, delivery, attempt, adapter)
    outcome = classify(result)
    telemetry.emit(
        "adapter_call", "stop", delivery_id=delivery.id, tenant_id=delivery.tenant_id, adapter=adapter,
        attempt=attempt, outcome=outcome.outcome.value, error_class=outcome.error_class, duration_ms=duration_ms,
    )
    retry: backoff.RetryAt | None = None
    retry_after = getattr(result, "retry_after", None)
    route = next_adapter(runtime.settings.failover, delivery.adapter, adapter) if outcome.transient else adapter
    if outcome.transient:  # only a failure that may be retried needs a backoff
        decision = backoff.decide(
            attempt, delivery.max_attempts, now=db.now(), min_ms=runtime.settings.backoff_min_ms,
            max_ms=runtime.settings.backoff_max_ms,
            retry_after_s=retry_after if route == adapter else None,  # the wait was asked of that adapter only
        )
        retry = decision if isinstance(decision, backoff.RetryAt) else None
    accepted = result if isinstance(result, SendResult) else None
    recorded = deliveries.record(
        delivery.id, attempt, write_with=runtime.batches and runtime.batches.write,
        outcome=outcome.outcome.value,
        error_class=outcome.error_class and outcome.error_class.value,
        adapter=adapter,
        status=outcome.status,
        reason=outcome.reason,
        next_attempt_at=retry and retry.when,
        provider=accepted and accepted.provider,
        provider_message_id=accepted and accepted.provider_message_id,
        provider_response=_response_of(result),
        error_message=None if accepted else _describe(result),
        duration_ms=duration_ms,
    )
    report.update(outcome=outcome.outcome.value, error_class=outcome.error_class, status=outcome.status.value)
    if not outcome.unhandled:  # an adapter's bug says nothing about its provider's health
        _report_health(runtime, go, outcome.transient, retry_after)
    if not recorded:
        logger.warning("delivery %s: attempt %d finished after its claim was lost; not recorded", delivery.id, attempt)
    elif accepted:
        logger.debug("delivery %s: attempt %d/%d via %s succeeded", delivery.id, attempt, delivery.max_attempts,
                     adapter)
    elif outcome.transient:
        _retry_or_exhaust(runtime, delivery, attempt, outcome, result, retry, adapter, route)
    else:
        logger.info("delivery %s: attempt %d/%d via %s %s (%s); %s(%s)", delivery.id, attempt, delivery.max_attempts,
                    adapter, outcome.outcome.value, _cause_of(adapter, result),
                    outcome.status.value, outcome.reason and outcome.reason.value)


def _report_health(runtime: Runtime, go: Go, transient: bool, retry_after: float | None) -> None:
    """Tell the guard what the call said about its provider (after the record: a Redis failure here
    must not lose the attempt), and say when that opened or closed the adapter's circuit."""
    adapter = go.adapter
    try:
        changed = runtime.guard.report(go, transient=transient, retry_after_s=retry_after)
    except Exception:  # the circuit misses one data point; the next call reports again
        logger.warning("adapter %s: outcome not reported to the circuit breaker", adapter, exc_info=True)
        return
    if changed == "opened":
        logger.warning("adapter %s: circuit opened after transient failures in a row; no call for %d s, then one probe",
                       adapter, runtime.settings.circuit_open_seconds)
    elif changed == "closed":
        logger.warning("adapter %s: circuit closed (a call succeeded)", adapter)
    if changed:
        telemetry.emit("circuit", changed, adapter=adapter)


def _call_adapter(runtime: Runtime, delivery: Delivery, attempt: int, adapter: str) -> tuple[Any, int]:
    """The adapter's SendResult or the exception it raised (BaseException — shutdown, the time limit —
    propagates: the attempt stays unrecorded and the lease lets another message claim it later)."""
    request = SendRequest(
        delivery_id=delivery.id, tenant_id=delivery.tenant_id, channel=delivery.channel,
        recipient=delivery.recipient, payload=delivery.payload, metadata=delivery.metadata,
        attempt_number=attempt, max_attempts=delivery.max_attempts,
    )
    started = time.perf_counter()
    try:
        result: Any = runtime.registry.get(adapter).send(request)
    except Exception as err:
        result = err
    return result, int((time.perf_counter() - started) * 1000)


def _retry_or_exhaust(
    runtime: Runtime, delivery: Delivery, attempt: int, outcome: Outcome, result: Any, retry: backoff.RetryAt | None,
    adapter: str, route: str,
) -> None:
    """After a recorded transient (or unhandled) failure: send the next attempt's message, due at the
    row's ``next_attempt_at``, or converge when no attempt is left.

    The next attempt is a fresh message, never a Dramatiq retry: Dramatiq's retry count is kept for
    failures that spend no attempt (see :data:`DRAMATIQ_MAX_RETRIES`), so it can never run out
    before the durable attempt count does."""
    cause = _cause_of(adapter, result)
    if outcome.unhandled:
        _log_unhandled(delivery, attempt, outcome, result, cause, retry, adapter)
    if retry is None:
        if deliveries.exhaust(delivery.id):
            logger.warning("delivery %s: attempt %d/%d via %s %s (%s); no attempt left: cancelled(retries_exhausted)",
                           delivery.id, attempt, delivery.max_attempts, adapter, outcome.outcome.value, cause)
        return
    if not outcome.unhandled:  # the unhandled outcome's ERROR already says all of this
        via = f" via {route}" if route != adapter else ""
        logger.info("delivery %s: attempt %d/%d via %s %s (%s); next attempt%s at %s", delivery.id, attempt,
                    delivery.max_attempts, adapter, outcome.outcome.value, cause, via, retry.when.isoformat())
    enqueue(delivery.id, delay_ms=retry.delay_ms, dedupe=False, runtime=runtime, route=route)


def _log_unhandled(
    delivery: Delivery, attempt: int, outcome: Outcome, result: Any, cause: str, retry: backoff.RetryAt | None,
    adapter: str,
) -> None:
    """One ERROR per unhandled attempt naming UnhandledOutcomeError, with every field and a traceback
    that reaches into the adapter when it raised (for alerting and error trackers, which skip
    Dramatiq's quiet retries)."""
    fields = dict(
        delivery_id=delivery.id, outcome=outcome.outcome.value, error_class=ErrorClass.UNKNOWN_CLASSIFICATION.value,
        status=Status.FAILED.value, attempt=attempt, max_attempts=delivery.max_attempts,
    )
    try:
        raise UnhandledOutcomeError(**fields) from (
            AdapterRaised(f"{cause} (its message is on the attempt row)")
            .with_traceback(result.__traceback__)
            if isinstance(result, BaseException) else None
        )
    except UnhandledOutcomeError as error:
        logger.error(
            "UnhandledOutcomeError: %s (%s); %s", error, cause,
            f"next attempt at {retry.when.isoformat()}" if retry else "no attempt left",
            exc_info=True, extra={"unhandled_outcome": fields},
        )
    telemetry.emit("unhandled_outcome", "stop", adapter=adapter, **fields)


class AdapterRaised(Exception):  # noqa: N818 - named for what the log line says
    """Stands in, in logs, for an exception an adapter raised: its type and traceback, not its message
    (which may quote a recipient; it is kept on the attempt row)."""


def _cause_of(adapter: str, result: Any) -> str:
    """What the adapter did, for a log line: never the exception's message (see AdapterRaised)."""
    if isinstance(result, BaseException):
        return f"adapter {adapter} raised {type(result).__qualname__}"
    return f"adapter {adapter} returned {type(result).__name__}, not a SendResult"


def _response_of(result: Any) -> dict[str, Any]:
    """The provider's redacted summary, from a SendResult or a DeliveryError only (the contract)."""
    if isinstance(result, SendResult | DeliveryError):
        return dict(result.response)
    return {}


def _describe(result: Any) -> str:
    """The error class and message, kept on the attempt row (never logged: it may quote an address)."""
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result}"
    return f"adapter returned {type(result).__name__}, not a SendResult"


def sweep_actor(runtime: Runtime) -> None:
    """Re-enqueue deliveries whose message was lost (the body lives in chimeway.dispatch.sweep)."""
    run_periodic("sweep", lambda: sweep(runtime=runtime))


def declare(broker: dramatiq.Broker, runtime: Runtime) -> dict[str, dramatiq.Actor]:
    """The deliver and sweep actors on ``broker``, bound to ``runtime`` (see ``binding.bind``).
    ``deliver`` is the normal lane's; ``deliver_high`` and ``deliver_bulk`` the other lanes' (see
    :data:`LANES`). The reconcile actor is declared beside its body (``webhooks/reconciler.declare``)."""
    settings = runtime.settings
    deliver_options = {
        # The durable attempt count is the budget (the claim enforces max_attempts); Dramatiq
        # retries only failures that spend no attempt. When those retries run out, the
        # ExhaustionGuard re-enqueues a delivery that still has attempts (it never cancels one).
        "max_retries": DRAMATIQ_MAX_RETRIES,
        "min_backoff": max(1, settings.backoff_min_ms),
        "max_backoff": max(1, settings.backoff_max_ms),
        # An attempt must not outlive its lease: past it, another worker may claim the delivery.
        **({"time_limit": settings.lease_seconds * 1000} if "time_limit" in broker.actor_options else {}),
    }
    specs = {"sweep_actor": (sweep_actor, "chimeway_sweep", QUEUE, 0, PERIODIC_OPTIONS)}
    for priority, lane in LANES.items():
        key = "deliver" if priority is Priority.NORMAL else f"deliver_{priority.value}"
        specs[key] = (deliver, lane.actor_name, lane.queue, lane.order, deliver_options)
    return {
        key: bind(broker, runtime, body, actor_name=name, queue=queue, order=order, options=options)
        for key, (body, name, queue, order, options) in specs.items()
    }
