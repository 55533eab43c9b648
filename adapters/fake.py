"""``fake``: an adapter whose outcomes are scripted per attempt, for tests and demos.

``payload["fake_outcomes"]`` lists one outcome per attempt; the last one repeats (default
``["ok"]``)::

    ok          succeed (provider ``payload["fake_provider"]`` or "fake", message id
                ``payload["fake_provider_message_id"]`` or a fresh one)
    temporary   raise TemporaryError        permanent   raise PermanentError
    throttled:S raise TemporaryError with retry_after S seconds (a provider's 429 with Retry-After)
    bounced     raise BouncedError          garbage     return something that is not a SendResult
    crash       raise an unexpected exception
    sleep:MS    sleep MS milliseconds, then succeed

Every call is recorded in memory (``FakeAdapter.calls``, ``FakeAdapter.calls_for(id)``) and, when the environment
variable ``CHIMEWAY_FAKE_CALL_LOG`` names a file, appended to it as one JSON line as the call
begins — delivery_id, attempt_number, idempotency_key, pid, at (epoch seconds) — so tests can count calls across
processes, including calls cut short by a crash.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from chimeway.adapter import Adapter, BouncedError, PermanentError, SendRequest, SendResult, TemporaryError

#: The environment variable naming the cross-process call log.
CALL_LOG_ENV = "CHIMEWAY_FAKE_CALL_LOG"

OUTCOMES = ("ok", "temporary", "throttled:S", "permanent", "bounced", "garbage", "crash", "sleep:MS")


@dataclass(frozen=True)
class Call:
    delivery_id: str
    attempt_number: int
    idempotency_key: str
    outcome: str
    request: SendRequest


class FakeCrash(RuntimeError):
    """What the ``crash`` outcome raises: an exception no adapter contract allows."""


_lock = threading.Lock()


def scripted_outcome(payload: Any, attempt_number: int) -> str:
    """The outcome scripted for this attempt (1-based); the last one repeats."""
    script = payload.get("fake_outcomes") if hasattr(payload, "get") else None
    if not script:
        return "ok"
    if isinstance(script, str):
        script = [script]
    return str(script[min(attempt_number, len(script)) - 1])


class FakeAdapter(Adapter):
    name = "fake"
    channel = "any"
    environment = (CALL_LOG_ENV,)
    #: Every call made in this process, in order (chimeway.testing clears it between tests).
    calls: ClassVar[list[Call]] = []

    @classmethod
    def calls_for(cls, delivery_id: str | None = None) -> list[Call]:
        with _lock:
            return [call for call in cls.calls if delivery_id is None or call.delivery_id == delivery_id]

    @classmethod
    def reset(cls) -> None:
        with _lock:
            cls.calls.clear()

    def send(self, request: SendRequest) -> SendResult:
        outcome = scripted_outcome(request.payload, request.attempt_number)
        _log_call(request, outcome)
        if outcome.startswith("sleep:"):
            time.sleep(int(outcome.partition(":")[2]) / 1000)
            outcome = "ok"
        if outcome == "ok":
            provider = str(request.payload.get("fake_provider") or "fake")
            message_id = request.payload.get("fake_provider_message_id") or f"fake-{uuid.uuid4()}"
            return SendResult(provider=provider, provider_message_id=str(message_id), response={"fake": "ok"})
        if outcome.startswith("throttled:"):
            seconds = float(outcome.partition(":")[2])
            raise TemporaryError("fake: scripted 429", retry_after=seconds, response={"status": 429})
        if outcome == "temporary":
            raise TemporaryError("fake: scripted temporary failure", response={"fake": outcome})
        if outcome == "permanent":
            raise PermanentError("fake: scripted permanent failure", response={"fake": outcome})
        if outcome == "bounced":
            raise BouncedError("fake: scripted bounce", response={"fake": outcome})
        if outcome == "garbage":
            return {"not": "a SendResult"}  # type: ignore[return-value]
        if outcome == "crash":
            raise FakeCrash("fake: scripted crash")
        raise ValueError(f"fake: unknown scripted outcome {outcome!r}; known: {', '.join(OUTCOMES)}")


def _log_call(request: SendRequest, outcome: str) -> None:
    with _lock:
        FakeAdapter.calls.append(Call(request.delivery_id, request.attempt_number, request.idempotency_key, outcome, request))
    path = os.environ.get(CALL_LOG_ENV)
    if path:
        line = json.dumps({
            "delivery_id": request.delivery_id,
            "attempt_number": request.attempt_number,
            "idempotency_key": request.idempotency_key,
            "pid": os.getpid(),
            "at": time.time(),  # when the call began (epoch seconds): tests of scheduled sends read it
        })
        # One write of a short line with O_APPEND: lines from many processes never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
