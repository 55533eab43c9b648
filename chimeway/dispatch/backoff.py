"""Backoff: when to retry a transient failure. Returns a decision; the deliver actor acts on it.

Exponential with full jitter: the n-th attempt's retry waits a uniformly random time between
``min_ms`` and ``min(max_ms, min_ms * 2**(n-1))``, so a burst of failures spreads out instead of
retrying in lockstep. A provider's ``retry_after`` wins, within ``max_ms``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryAt:
    """Retry after ``delay_ms``, at ``when`` (now + delay): the row and the broker use the same value."""

    delay_ms: int
    when: datetime


@dataclass(frozen=True)
class GiveUp:
    """No attempt left in the budget: the failure is final."""


def decide(
    attempt_number: int,
    max_attempts: int,
    *,
    now: datetime,
    min_ms: int,
    max_ms: int,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> RetryAt | GiveUp:
    """The decision after attempt ``attempt_number`` (1-based) of ``max_attempts`` failed transiently."""
    if attempt_number >= max_attempts:
        return GiveUp()
    if retry_after_s is not None and retry_after_s >= 0:
        delay = min(max_ms, int(retry_after_s * 1000))
    else:
        ceiling = min(max_ms, min_ms * 2 ** min(attempt_number - 1, 32))
        delay = (rng or random).randint(min_ms, max(min_ms, ceiling))
    return RetryAt(delay_ms=delay, when=now + timedelta(milliseconds=delay))
