"""A worker whose PostgreSQL connections keep dropping: failures that spend no attempt never spend
the attempt budget (issue 10, item 1).

The worker reaches the shared PostgreSQL through a TCP proxy (``tests/harness/tcpproxy.py``) that
resets every connection, and refuses new ones, for 0.4 s of every second; this process sends through
a direct connection and runs the sweep every second, as the scheduler does every minute. Messages
then fail while loading or recording (no attempt spent) between scripted transient failures that do
spend attempts; a recorded failure whose next message was lost with its connection is re-enqueued
by the sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest

import chimeway
from chimeway.wiring import runtime as runtime_mod
from tests.harness.tcpproxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))


@pytest.fixture
def sweeping_runtime(pg_url, redis_url, redis_namespace):
    """This process's Chimeway (direct connection), with a one-second sweep stall."""
    configured = runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                       default_adapter="fake", sweep_stall_seconds=1, environ={})
    yield configured
    runtime_mod.reset()


def test_given_a_flapping_database_connection_when_deliveries_retry_transient_failures_then_every_one_succeeds(
    sweeping_runtime, workers, pg_url
):
    with TcpProxy(urlsplit(pg_url).port or 5432) as proxy:
        _, log = workers.start(threads=2, env={
            "CHIMEWAY_DATABASE_URL": through(proxy, pg_url),
            "CHIMEWAY_BACKOFF_MIN_MS": "50", "CHIMEWAY_BACKOFF_MAX_MS": "400",
            # 160 scripted transient failures: the circuit breaker would rightly open on them, and
            # this test is about the database, not the provider
            "CHIMEWAY_CIRCUIT_FAILURES": "100000",
        })
        flapping = proxy.flap(period=1.0, down=0.4, total=12.0)
        script = ["temporary"] * 4 + ["ok"]
        sent = []
        for _ in range(40):  # spread over ten seconds, so every stage of a delivery meets an outage
            sent.append(chimeway.send("email", "ann@example.com", {"fake_outcomes": script}, max_attempts=5).id)
            time.sleep(0.25)
        flapping.join()
        finished(sent, timeout=30)
    assert proxy.drops >= 10
    ended = Counter(
        (d.status, d.reason, len(chimeway.attempts(d.id))) for d in map(chimeway.get_delivery, sent)
    )
    # Five attempt rows each: no attempt was spent by a connection failure (not even by a claim whose
    # answer was lost: the message's retry carries its own claim on).
    assert ended == Counter({("succeeded", None, 5): 40})
    # An unreachable database is one ERROR per message (Dramatiq's, with the traceback), not also a
    # CRITICAL from the connection middleware that then runs the message anyway.
    assert "[CRITICAL]" not in log.read_text()


def finished(ids: list[str], timeout: float) -> bool:
    """Whether every delivery reached a terminal state within ``timeout`` seconds (the assertion says
    which did not), sweeping each second meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(chimeway.get_delivery(i).is_terminal for i in ids):
            return True
        chimeway.sweep()
        time.sleep(1)
    return False
