"""Broadcast on Redis pub/sub: after commit only, once per new event, and never at the request's expense."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from chimeway.api import reconcile
from chimeway.store.pubsub import delivery_channel, publish, tenant_channel
from chimeway.webhooks import handle
from chimeway.wiring import runtime as runtime_mod

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def postmark(secrets, message_id: str, record: str = "Delivery") -> tuple[dict[str, str], bytes]:
    credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
    body = {"RecordType": record, "MessageID": message_id, "Recipient": "john@example.com",
            "DeliveredAt": "2019-11-05T16:33:54.9070259Z", "ReceivedAt": "2019-11-05T16:40:00Z"}
    return {"Authorization": f"Basic {credentials}"}, json.dumps(body).encode()


@pytest.fixture
def subscriber(webhooks_redis) -> Iterator[Any]:
    client = redis.Redis.from_url(webhooks_redis.settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    namespace = webhooks_redis.settings.redis_namespace
    pubsub.subscribe(tenant_channel("default", namespace))
    assert pubsub.get_message(timeout=1) is None  # consumes the subscribe confirmation
    yield pubsub
    pubsub.close()
    client.close()


def test_a_subscriber_receives_the_broadcast_only_after_the_transaction_commits(
    webhooks_redis, secrets, make_delivery, subscriber
) -> None:
    delivery = make_delivery("postmark", "pm-live")
    with webhooks_redis.database.atomic():  # the application's own transaction around the view
        assert handle("postmark", *postmark(secrets, "pm-live")) == (200, "ok")
        assert subscriber.get_message(timeout=0.5) is None
    message = subscriber.get_message(timeout=2)
    assert message["channel"].decode() == tenant_channel("default", webhooks_redis.settings.redis_namespace)
    assert json.loads(message["data"]) == {
        "delivery_id": delivery.id,
        "event_type": "delivered",
        "occurred_at": "2019-11-05T16:33:54.907025+00:00",
    }


def test_a_rolled_back_transaction_broadcasts_nothing(webhooks_redis, secrets, make_delivery, subscriber) -> None:
    make_delivery("postmark", "pm-undo")

    class Undo(Exception):
        pass

    with pytest.raises(Undo), webhooks_redis.database.atomic():
        assert handle("postmark", *postmark(secrets, "pm-undo")) == (200, "ok")
        raise Undo
    assert subscriber.get_message(timeout=0.5) is None


def test_the_delivery_channel_carries_the_same_message(webhooks_redis, secrets, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-one")
    client = redis.Redis.from_url(webhooks_redis.settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(delivery_channel(delivery.id, webhooks_redis.settings.redis_namespace))
        pubsub.get_message(timeout=1)
        assert handle("postmark", *postmark(secrets, "pm-one", record="Open")) == (200, "ok")
        assert json.loads(pubsub.get_message(timeout=2)["data"])["event_type"] == "opened"
    finally:
        pubsub.close()
        client.close()


def test_a_replay_broadcasts_nothing_the_second_time(webhooks_redis, secrets, make_delivery, subscriber) -> None:
    make_delivery("postmark", "pm-twice")
    request = postmark(secrets, "pm-twice")
    assert handle("postmark", *request) == (200, "ok")
    assert subscriber.get_message(timeout=2) is not None
    assert handle("postmark", *request) == (200, "duplicate")
    assert subscriber.get_message(timeout=0.5) is None


def test_an_orphan_broadcasts_when_reconcile_links_it(webhooks_redis, make_delivery, orphan, subscriber) -> None:
    orphan("postmark", "pm-orphan", event_type="bounced", reject_reason="bounced")
    assert subscriber.get_message(timeout=0.3) is None
    delivery = make_delivery("postmark", "pm-orphan")
    assert reconcile().linked == 1
    message = json.loads(subscriber.get_message(timeout=2)["data"])
    assert (message["delivery_id"], message["event_type"]) == (delivery.id, "bounced")


def test_a_failed_publish_never_fails_the_request(pg_url, secrets, make_delivery, redis_namespace, caplog) -> None:
    runtime_mod.configure(
        database_url=pg_url, redis_url="redis://127.0.0.1:1/0", redis_namespace=redis_namespace,
        environ={}, **secrets.settings(),
    )
    try:
        make_delivery("postmark", "pm-dead-redis")
        with caplog.at_level("WARNING", logger="chimeway.pubsub"):
            assert handle("postmark", *postmark(secrets, "pm-dead-redis")) == (200, "ok")
    finally:
        runtime_mod.reset()
    assert [r.getMessage() for r in caplog.records] == ["broadcast of 1 delivery events failed: ConnectionError"]


def test_without_redis_publishing_does_nothing(webhooks) -> None:
    from datetime import UTC, datetime

    from chimeway.store.pubsub import Broadcast

    assert publish([Broadcast("default", "d-1", "opened", datetime.now(UTC))], runtime=webhooks) == 0


def test_a_large_batch_of_broadcasts_arrives_whole_and_in_order(webhooks_redis, subscriber) -> None:
    from datetime import UTC, datetime

    from chimeway.store.pubsub import CHUNK, Broadcast

    items = [Broadcast("default", f"d-{n}", "opened", datetime(2026, 1, 1, tzinfo=UTC)) for n in range(CHUNK * 2 + 7)]
    assert publish(items, runtime=webhooks_redis) == len(items)
    received = [json.loads(subscriber.get_message(timeout=2)["data"])["delivery_id"] for _ in items]
    assert received == [item.delivery_id for item in items]
