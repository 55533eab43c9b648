"""A worker's threads share claim and record statements (group commit) and every delivery still gets
exactly one claimed call and one attempt row: a real Dramatiq worker on PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import chimeway
from chimeway.dispatch.broker import start_worker
from chimeway.wiring import runtime as runtime_mod

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_given_eight_busy_threads_then_claims_and_records_share_statements_and_each_delivery_is_sent_once(
    pg_url, redis_url, redis_namespace
):
    runtime = runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                    default_adapter="fake", group_commit_wait_ms=2, environ={})
    try:
        fake = runtime.registry.adapter_class("fake")
        fake.reset()
        sent = chimeway.send_many([{"channel": "email", "recipient": f"user{i}@example.com",
                                    "payload": {"fake_outcomes": ["ok"]}} for i in range(300)])
        with start_worker(runtime, threads=8):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(chimeway.get_delivery(d.id).is_terminal for d in sent):
                time.sleep(0.2)
        ended = Counter((chimeway.get_delivery(d.id).status, len(chimeway.attempts(d.id))) for d in sent)
        assert ended == Counter({("succeeded", 1): 300})
        assert Counter(call.delivery_id for call in fake.calls) == Counter({str(d.id): 1 for d in sent})
        starts, records = runtime.batches.starts, runtime.batches.records
        assert starts.requests == records.requests == 300
        # shared statements: fewer batches than deliveries, on both sides of the adapter call
        assert starts.batches < 300 and records.batches < 300, (starts.batches, records.batches)
    finally:
        runtime_mod.reset()
