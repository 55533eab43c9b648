"""Broadcast delivery feedback on Redis pub/sub, after the transaction that stored it commits.

Channels: ``<namespace>:<tenant>:deliveries`` (every delivery of a tenant) and
``<namespace>:delivery:<id>`` (one delivery); the namespace is CHIMEWAY_REDIS_NAMESPACE, ``chimeway``
by default. The message is small JSON: ``{"delivery_id", "event_type", "occurred_at"}`` — never a
recipient or a payload. Broadcasting is best effort: without Redis it does nothing, and a failed
publish is logged, never raised, so it can never fail the webhook request that caused it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.pubsub")

#: Broadcasts per Redis call. A reconcile batch links thousands of orphans: one script call per
#: chunk publishes them all, instead of two round-trip-packed commands per event.
CHUNK = 500

#: ARGV holds (tenant channel, delivery channel, message) triples; each message goes to both channels.
_PUBLISH_BOTH = """
for i = 1, #ARGV, 3 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 2])
    redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2])
end
return #ARGV / 3
"""


@dataclass(frozen=True)
class Broadcast:
    tenant_id: str
    delivery_id: str
    event_type: str
    occurred_at: datetime

    def message(self) -> str:
        return json.dumps(
            {"delivery_id": self.delivery_id, "event_type": self.event_type, "occurred_at": self.occurred_at.isoformat()},
            separators=(",", ":"),
        )


def tenant_channel(tenant_id: str, namespace: str = "chimeway") -> str:
    return f"{namespace}:{tenant_id}:deliveries"


def delivery_channel(delivery_id: str, namespace: str = "chimeway") -> str:
    return f"{namespace}:delivery:{delivery_id}"


def publish(broadcasts: Sequence[Broadcast], runtime: Runtime) -> int:
    """Publish now; how many broadcasts went out (0 without Redis or when Redis failed)."""
    if not broadcasts:
        return 0
    client = runtime.redis
    if client is None:
        return 0
    namespace = runtime.settings.redis_namespace
    try:
        script = client.register_script(_PUBLISH_BOTH)
        for start in range(0, len(broadcasts), CHUNK):
            args: list[str] = []
            for item in broadcasts[start : start + CHUNK]:
                args += [tenant_channel(item.tenant_id, namespace), delivery_channel(item.delivery_id, namespace), item.message()]
            script(args=args)
    except Exception as err:  # noqa: BLE001 - a broadcast must never fail the caller
        logger.warning("broadcast of %d delivery events failed: %s", len(broadcasts), type(err).__name__)
        return 0
    return len(broadcasts)
