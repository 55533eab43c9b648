"""Backoff decisions: exponential with full jitter between the bounds; give up at the final attempt."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from chimeway.dispatch.backoff import GiveUp, RetryAt, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_given_the_final_attempt_failed_then_the_decision_is_give_up():
    assert decide(5, 5, now=NOW, min_ms=100, max_ms=1000) == GiveUp()
    assert decide(6, 5, now=NOW, min_ms=100, max_ms=1000) == GiveUp()


def test_given_attempt_n_failed_then_the_delay_is_jittered_between_min_and_min_times_2_to_the_n_minus_1():
    rng = random.Random(7)
    for attempt, ceiling in ((1, 100), (2, 200), (3, 400), (4, 800), (9, 1000)):
        delays = {decide(attempt, 10, now=NOW, min_ms=100, max_ms=1000, rng=rng).delay_ms for _ in range(200)}
        assert min(delays) >= 100 and max(delays) <= ceiling
        if ceiling > 100:
            assert len(delays) > 10  # jittered, not a fixed step


def test_given_a_decision_then_when_is_now_plus_the_delay():
    decision = decide(2, 5, now=NOW, min_ms=100, max_ms=1000, rng=random.Random(1))
    assert isinstance(decision, RetryAt)
    assert decision.when == NOW + timedelta(milliseconds=decision.delay_ms)


def test_given_a_provider_retry_after_then_it_wins_within_the_maximum():
    assert decide(1, 5, now=NOW, min_ms=100, max_ms=10_000, retry_after_s=3).delay_ms == 3000
    assert decide(1, 5, now=NOW, min_ms=100, max_ms=10_000, retry_after_s=3600).delay_ms == 10_000
