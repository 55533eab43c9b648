"""The guard's batch admission (``RedisGuard.admit_many``, one round trip for a worker's claim batch)
decides as the same admissions one by one would: rate limits count every attempt, a half-open
circuit lets exactly one probe through, an open circuit or a pause holds every attempt on the route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from chimeway.dispatch.resilience import Go, RedisGuard, Wait
from chimeway.wiring.config import load_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def guard(redis_url: str, redis_namespace: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)

    def make(**settings: Any) -> RedisGuard:
        return RedisGuard(load_settings(environ={}, redis_namespace=redis_namespace, **settings), client)

    yield make
    client.close()


def kinds(decisions: list[Go | Wait]) -> list[tuple[str, str]]:
    return [("go", d.adapter) if isinstance(d, Go) else (d.why, d.adapter) for d in decisions]


def test_unlimited_attempts_on_one_route_are_all_admitted(guard):
    decisions = guard().admit_many([("fake", "fake")] * 6 + [("log", "log")])
    assert kinds(decisions) == [("go", "fake")] * 6 + [("go", "log")]
    assert all(d.clean for d in decisions)


def test_a_rate_limit_counts_every_attempt_of_the_batch_as_one_by_one_admissions_do(guard):
    limits = {"rate_limits": {"fake": (2, 3600), "log": (2, 3600)}}
    batch = guard(**limits).admit_many([("fake", "fake")] * 6)
    alone = [guard(**limits).admit("log", "log") for _ in range(6)]
    assert [kind for kind, _ in kinds(batch)] == [kind for kind, _ in kinds(alone)]
    assert [kind for kind, _ in kinds(batch)].count("go") == 2  # two calls pass at once (GCRA tolerance of one interval)
    # and the waiting ones are spread over the limit's intervals, not all sent back at the next slot
    waits = [d.delay_ms for d in batch if isinstance(d, Wait)]
    assert waits == sorted(waits) and len(set(waits)) == len(waits)


def test_a_half_open_circuit_lets_one_attempt_of_the_batch_probe_and_holds_the_others(guard):
    opener = guard(circuit_failures=1, circuit_open_seconds=1)
    opener.report(Go("fake"), transient=True)
    assert kinds(opener.admit_many([("fake", "fake")] * 3)) == [("open", "fake")] * 3
    opener.client.hset(f"{opener.namespace}:resilience:fake:circuit", "open_until", 1)  # the open time is over
    decisions = opener.admit_many([("fake", "fake")] * 4)
    probes = [d for d in decisions if isinstance(d, Go)]
    assert len(probes) == 1 and probes[0].probe
    assert [d.why for d in decisions if isinstance(d, Wait)] == ["open"] * 3


def test_a_pause_holds_every_attempt_on_the_route_and_failover_goes_around_an_open_circuit(guard):
    paused = guard()
    paused.report(Go("fake"), transient=True, retry_after_s=60)
    assert kinds(paused.admit_many([("fake", "fake")] * 3)) == [("paused", "fake")] * 3
    failing = guard(circuit_failures=1, failover={"log": "fake"})
    failing.report(Go("log"), transient=True)
    assert kinds(failing.admit_many([("log", "log")] * 2)) == [("paused", "fake")] * 2
