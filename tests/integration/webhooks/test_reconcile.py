"""Orphans: stored when no delivery matches, linked later by reconcile — once, in their own tenant."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

import pytest

from chimeway import db
from chimeway.api import reconcile
from chimeway.models import Delivery, Event
from chimeway.webhooks import handle, reconcile_orphans, reconciler


def reconciled_events() -> list[Event]:
    return list(Event.select().where(Event.type == "reconciled"))


def post_postmark_delivery(
    secrets, message_id: str, tenant_id: str | None = None, at: str = "2019-11-05T16:33:54.9070259Z"
) -> tuple[int, str]:
    credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
    body = {"RecordType": "Delivery", "MessageID": message_id, "Recipient": "john@example.com",
            "DeliveredAt": at, "ServerID": 23, "MessageStream": "outbound"}
    return handle("postmark", {"Authorization": f"Basic {credentials}"}, json.dumps(body), tenant_id)


def test_an_event_for_an_unknown_message_is_stored_as_an_orphan_then_linked_after_the_delivery_commits(
    webhooks, secrets, make_delivery
) -> None:
    assert post_postmark_delivery(secrets, "pm-late") == (200, "ok")
    orphan = Event.get()
    assert (orphan.delivery_id, orphan.needs_reconciliation) == (None, True)

    delivery = make_delivery("postmark", "pm-late")
    result = reconcile(now=db.now() + timedelta(seconds=120))

    assert (result.scanned, result.linked) == (1, 1)
    [linked] = reconciled_events()
    assert (linked.delivery_id, linked.idempotency_key) == (delivery.id, f"reconciled:{orphan.id}")
    assert linked.metadata == {"orphan_id": orphan.id, "orphan_type": "delivered"}
    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.delivered_at, row.lock_version) == ("delivered", orphan.occurred_at, 1)
    assert Event.get_by_id(orphan.id).delivery_id is None  # the orphan itself is never updated


def test_reconciling_twice_appends_one_reconciled_event(webhooks, make_delivery, orphan) -> None:
    orphan("postmark", "pm-1")
    delivery = make_delivery("postmark", "pm-1")
    assert reconcile() == reconciler.ReconcileResult(scanned=1, linked=1)
    assert reconcile() == reconciler.ReconcileResult(scanned=0, linked=0)
    assert len(reconciled_events()) == 1
    assert Delivery.get_by_id(delivery.id).lock_version == 1


def test_an_orphan_without_a_delivery_stays_an_orphan_and_is_scanned_again(webhooks, orphan) -> None:
    orphan("postmark", "pm-never")
    assert reconcile() == reconciler.ReconcileResult(scanned=1, linked=0)
    assert reconcile() == reconciler.ReconcileResult(scanned=1, linked=0)
    assert reconciled_events() == []


def test_an_orphan_in_one_tenant_never_links_to_a_delivery_of_another(webhooks, make_delivery, orphan) -> None:
    orphan("postmark", "pm-shared", tenant_id="acme")
    other = make_delivery("postmark", "pm-shared", tenant_id="globex")
    assert reconcile().linked == 0
    assert reconcile(tenant_id="acme").linked == 0
    assert reconciled_events() == [] and Delivery.get_by_id(other.id).lock_version == 0


def test_a_tenant_filtered_reconcile_links_only_that_tenants_orphans(webhooks, make_delivery, orphan) -> None:
    orphan("postmark", "pm-a", tenant_id="acme")
    orphan("postmark", "pm-b", tenant_id="globex")
    make_delivery("postmark", "pm-a", tenant_id="acme")
    make_delivery("postmark", "pm-b", tenant_id="globex")
    assert reconcile(tenant_id="acme") == reconciler.ReconcileResult(scanned=1, linked=1)
    assert [e.tenant_id for e in reconciled_events()] == ["acme"]


def test_webhooks_posted_to_a_tenant_url_match_only_that_tenants_deliveries(webhooks, secrets, make_delivery) -> None:
    make_delivery("postmark", "pm-t", tenant_id="acme")
    assert post_postmark_delivery(secrets, "pm-t", at="2019-11-05T16:33:54Z") == (200, "ok")
    assert post_postmark_delivery(secrets, "pm-t", tenant_id="acme", at="2019-11-05T16:33:55Z") == (200, "ok")
    events = sorted((e.tenant_id, e.delivery_id is not None) for e in Event.select())
    assert events == [("acme", True), ("default", False)]


def test_an_orphan_inside_the_grace_window_is_not_linked(webhooks, make_delivery, orphan) -> None:
    orphan("postmark", "pm-fresh", age_seconds=10)
    make_delivery("postmark", "pm-fresh")
    assert reconcile() == reconciler.ReconcileResult(scanned=0, linked=0)
    assert reconcile(now=db.now() + timedelta(seconds=60)).linked == 1


def test_an_orphan_past_the_max_age_is_not_scanned(webhooks, make_delivery, orphan) -> None:
    max_age = webhooks.settings.reconcile_max_age_minutes * 60
    orphan("postmark", "pm-old", age_seconds=max_age + 60)
    make_delivery("postmark", "pm-old")
    assert reconcile() == reconciler.ReconcileResult(scanned=0, linked=0)
    assert reconciled_events() == []


def test_linked_orphans_never_fill_the_batch(webhooks, make_delivery, orphan) -> None:
    for n in range(5):
        orphan("postmark", f"pm-linked-{n}", age_seconds=7200)
        make_delivery("postmark", f"pm-linked-{n}")
    assert reconcile(batch_size=5).linked == 5
    orphan("postmark", "pm-new", age_seconds=3600)
    make_delivery("postmark", "pm-new")
    # Only the new orphan is scanned: the five linked ones, older, are not even read.
    assert reconcile(batch_size=5) == reconciler.ReconcileResult(scanned=1, linked=1)


def test_unlinkable_orphans_do_not_starve_newer_ones(webhooks, make_delivery, orphan) -> None:
    for n in range(6):
        orphan("postmark", f"pm-nobody-{n}", age_seconds=7200)
    orphan("postmark", "pm-someone", age_seconds=3600)
    make_delivery("postmark", "pm-someone")
    assert reconcile(batch_size=2) == reconciler.ReconcileResult(scanned=7, linked=1)


def test_a_reconciled_hard_bounce_suppresses_the_address(webhooks, make_delivery, orphan) -> None:
    from chimeway.models import Suppression

    orphan("postmark", "pm-bounce", event_type="bounced", reject_reason="bounced")
    make_delivery("postmark", "pm-bounce", recipient="Gone@Example.com")
    assert reconcile().linked == 1
    assert [(s.address, s.reason) for s in Suppression.select()] == [("gone@example.com", "hard_bounce")]


@pytest.mark.postgres
def test_four_concurrent_reconcilers_append_one_reconciled_event_per_orphan(pg_webhooks, make_delivery, orphan) -> None:
    for n in range(300):
        orphan("postmark", f"pm-race-{n}")
        make_delivery("postmark", f"pm-race-{n}")
    start, results, errors = threading.Barrier(4), [], []

    def reconciler_thread() -> None:
        try:
            start.wait()
            results.append(reconcile(batch_size=40))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)
        finally:
            pg_webhooks.database.close()

    threads = [threading.Thread(target=reconciler_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(result.linked for result in results) == 300
    keys = [event.idempotency_key for event in reconciled_events()]
    assert len(keys) == len(set(keys)) == 300
    assert {d.lock_version for d in Delivery.select()} == {1}


def test_the_reconcile_actor_skips_a_run_that_overlaps_another(webhooks, make_delivery, orphan) -> None:
    orphan("postmark", "pm-actor")
    make_delivery("postmark", "pm-actor")
    assert reconcile_orphans(webhooks) == reconciler.ReconcileResult(scanned=1, linked=1)
    assert reconcile_orphans(webhooks) is None  # a second run within 60 s is skipped (in-memory claim: no Redis here)
    assert reconcile_orphans(webhooks, tenant_id="acme") == reconciler.ReconcileResult(scanned=0, linked=0)


@pytest.mark.redis
@pytest.mark.postgres
def test_the_reconcile_actor_dedupes_in_redis_and_yields_to_a_held_advisory_lock(
    webhooks_redis, make_delivery, orphan, redis_namespace
) -> None:
    import psycopg2
    import redis

    orphan("postmark", "pm-lock")
    make_delivery("postmark", "pm-lock")
    holder = psycopg2.connect(webhooks_redis.settings.database_url)
    try:
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (reconciler.advisory_lock_key("*"),))
        assert reconcile_orphans(webhooks_redis) is None  # another reconciler holds the lock: nothing linked
        assert reconciled_events() == []
        client = redis.Redis.from_url(webhooks_redis.settings.redis_url)
        try:
            assert client.ttl(f"{redis_namespace}:reconcile:run:*") > 0
            client.delete(f"{redis_namespace}:reconcile:run:*")
        finally:
            client.close()
        holder.cursor().execute("SELECT pg_advisory_unlock(%s)", (reconciler.advisory_lock_key("*"),))
        assert reconcile_orphans(webhooks_redis) == reconciler.ReconcileResult(scanned=1, linked=1)
        assert reconcile_orphans(webhooks_redis) is None  # deduped in Redis for 60 s
    finally:
        holder.close()
