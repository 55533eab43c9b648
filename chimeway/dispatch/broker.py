"""The broker: Redis when CHIMEWAY_REDIS_URL is set, else Dramatiq's in-memory StubBroker.

Dramatiq's Redis defaults take a minute to notice a dead worker and rarely run maintenance, so a
killed worker's messages wait long before they return: Chimeway sets both explicitly.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from chimeway.config import Settings


def build_broker(settings: Settings, client: redis.Redis | None) -> dramatiq.Broker:
    if client is None:
        broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    return RedisBroker(
        client=client,
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.broker_heartbeat_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )


def wire(runtime: Any, broker: dramatiq.Broker | None = None) -> None:
    """Attach the Redis client and broker to ``runtime``; the broker becomes Dramatiq's global one."""
    settings = runtime.settings
    runtime.redis = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    runtime.broker = broker or build_broker(settings, runtime.redis)
    dramatiq.set_broker(runtime.broker)
