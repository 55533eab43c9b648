"""A PostgreSQL restart under a running application: the next request reconnects.

Runs against a private cluster (never the shared server), started and torn down by the harness.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from chimeway.ops.demo import mailgun_body
from chimeway.store.migrator import migrate
from chimeway.webhooks import handle
from chimeway.wiring import runtime as runtime_mod

PG_BIN = os.environ.get("CHIMEWAY_HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin")
KEY = "restart-test-key"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(f"{PG_BIN}/initdb"), reason="PostgreSQL server binaries not installed"),
    pytest.mark.skipif(shutil.which("runuser") is None or os.geteuid() != 0,
                       reason="the private cluster runs as the postgres user through runuser, which needs root"),
]


@pytest.fixture
def private_pg():
    from tests.harness.servers import private_servers

    with private_servers(prefix="chimeway-restart-test-") as (_, _, pg, _):
        yield pg


def _until_ok(call, seconds: float = 10.0):
    """Call until it stops failing: the first call after a restart may find the dead connection."""
    deadline = time.monotonic() + seconds
    failures = 0
    while True:
        try:
            result = call()
        except Exception:
            result = None
        if result is not None:
            return result, failures
        failures += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"still failing {seconds}s after the restart ({failures} failures)")
        time.sleep(0.2)


def test_given_a_postgresql_restart_then_webhooks_and_sends_recover_on_the_next_request(private_pg):
    runtime = runtime_mod.configure(
        database_url=private_pg.url(), redis_url="", environ={}, mailgun_webhook_signing_key=KEY
    )
    try:
        migrate(runtime.database)
        body = lambda: mailgun_body(KEY, f"<{uuid.uuid4().hex}@restart.test>", "delivered")  # noqa: E731
        assert handle("mailgun", {}, body()).status == 200  # this thread now holds a pooled connection

        private_pg.restart(downtime=0.5)

        def webhook():
            response = handle("mailgun", {}, body())
            return response if response.status == 200 else None

        _, failures = _until_ok(webhook)
        assert failures <= 1  # one 503 at most: the dead connection is dropped, not kept for a minute

        import chimeway

        private_pg.restart(downtime=0.5)
        delivery, failures = _until_ok(lambda: chimeway.send("email", "a@restart.test", {}, adapter="log"))
        assert failures <= 1
        assert chimeway.get_delivery(delivery.id).status in ("pending", "succeeded")
    finally:
        runtime_mod.reset()
