"""One SET NX helper, in Redis and in memory, behind the enqueue dedupe, the reconcile run claim and
the scheduler's tick claim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib

from chimeway.store.setnx import SetNX


@pytest.fixture(params=["memory", "redis"])
def setnx(request: pytest.FixtureRequest) -> Iterator[tuple[SetNX, str]]:
    if request.param == "memory":
        yield SetNX(), "ns"
        return
    client = redis_lib.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield SetNX(client), request.getfixturevalue("redis_namespace")
    finally:
        client.close()


def test_given_a_key_set_when_set_again_then_only_the_first_wins_until_it_is_forgotten(setnx) -> None:
    helper, ns = setnx
    assert helper.first(f"{ns}:a", 60) is True
    assert helper.first(f"{ns}:a", 60) is False
    assert helper.first(f"{ns}:b", 60) is True
    helper.forget(f"{ns}:a")
    assert helper.first(f"{ns}:a", 60) is True


@pytest.mark.redis
def test_every_set_nx_user_goes_through_the_runtime_helper(redis_url, redis_namespace, database_url) -> None:
    # Given a runtime on Redis
    from chimeway.ops.scheduler import Scheduler
    from chimeway.webhooks import reconciler
    from chimeway.wiring import runtime as runtime_mod

    configured = runtime_mod.configure(database_url=database_url, redis_url=redis_url, redis_namespace=redis_namespace)
    try:
        assert isinstance(configured.setnx, SetNX) and configured.setnx.client is configured.redis
        # When the reconcile run claim and a scheduler tick are claimed
        assert reconciler._claim_run(configured, "*") is True
        assert reconciler._claim_run(configured, "*") is False
        scheduler = Scheduler(configured, jobs=[])
        assert isinstance(scheduler._claims, SetNX) and scheduler._claims.client is not None
    finally:
        runtime_mod.reset()
