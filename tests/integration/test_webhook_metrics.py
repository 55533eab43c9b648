"""Prometheus metrics for the webhook side: requests by status, verify failures, duplicates,
linked orphans and the orphan backlog read at scrape time."""

from __future__ import annotations

import uuid

import pytest

from chimeway import metrics
from chimeway.api import reconcile
from chimeway.models import Delivery
from chimeway.ops.demo import mailgun_body
from chimeway.webhooks import handle
from chimeway.wiring import runtime as runtime_mod

prometheus_client = pytest.importorskip("prometheus_client")
KEY = "metrics-test-key"
HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def runtime(database_url):
    runtime = runtime_mod.configure(
        database_url=database_url, redis_url="", environ={}, mailgun_webhook_signing_key=KEY,
        reconcile_grace_seconds=0,
    )
    yield runtime
    runtime_mod.reset()



def test_given_webhooks_and_a_reconcile_then_each_is_counted_and_the_backlog_follows(runtime, registry):
    value = registry.get_sample_value
    message_id = f"<{uuid.uuid4().hex}@metrics.test>"
    replayed = mailgun_body(KEY, message_id, "delivered")
    assert handle("mailgun", HEADERS, replayed)[0] == 200  # an orphan: no delivery yet
    assert handle("mailgun", HEADERS, replayed)[0] == 200  # the provider retries: a duplicate
    assert handle("mailgun", HEADERS, mailgun_body("wrong-key", message_id, "opened"))[0] == 401

    assert value("chimeway_webhooks_total", {"provider": "mailgun", "status": "200"}) == 2
    assert value("chimeway_webhooks_total", {"provider": "mailgun", "status": "401"}) == 1
    assert value("chimeway_webhook_verify_failures_total", {"provider": "mailgun"}) == 1
    assert value("chimeway_webhook_duplicates_total", {"provider": "mailgun"}) == 1
    assert value("chimeway_orphan_backlog") == 1
    assert value("chimeway_oldest_orphan_age_seconds") >= 0

    Delivery.create(
        notification_id=str(uuid.uuid4()), channel="email", recipient="r@metrics.test", adapter="fake",
        status="succeeded", provider="mailgun", provider_message_id=message_id,
    )
    assert reconcile().linked == 1
    assert value("chimeway_reconcile_linked_total") == 1
    metrics._installed[id(registry)]._orphans._read_at = float("-inf")  # skip the 30 s scrape cache
    assert value("chimeway_orphan_backlog") == 0
