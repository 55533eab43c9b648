"""Sweep tests: lost deliveries written through the model, messages read back from the stub broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
import pytest

from chimeway import db
from chimeway.models import Delivery
from chimeway.wiring import runtime as runtime_mod


@pytest.fixture
def lost(configured: runtime_mod.Runtime) -> Callable[..., Delivery]:
    """A delivery row whose timestamps are given as ages: ``updated=600`` means changed 600 s ago."""

    def create(**fields: Any) -> Delivery:
        now = db.now()
        values: dict[str, Any] = {
            "notification_id": str(uuid.uuid4()),
            "channel": "email",
            "recipient": "bob@example.com",
            "adapter": "fake",
            "created_at": now - timedelta(hours=1),
        }
        for name in ("updated", "enqueued", "next_attempt", "lease", "next_eligible"):
            if name in fields:
                age = fields.pop(name)
                values[f"{name}_at" if name != "lease" else "lease_until"] = (
                    None if age is None else now - timedelta(seconds=age)
                )
        values.setdefault("updated_at", now - timedelta(hours=1))
        values.update(fields)
        return Delivery.create(**values)

    return create


@pytest.fixture
def queued(configured: runtime_mod.Runtime) -> Callable[[], list[str]]:
    """The delivery id of every deliver message waiting on the stub broker (immediate and delayed)."""

    def read() -> list[str]:
        deliver = configured.actors["deliver"].actor_name
        ids = []
        for queue in configured.broker.queues.values():
            for raw in list(queue.queue):
                message = dramatiq.Message.decode(raw)
                if message.actor_name == deliver:
                    ids.append(message.args[0])
        return ids

    return read


@pytest.fixture
def many_lost(configured: runtime_mod.Runtime) -> Callable[[int], list[str]]:
    """``many_lost(n)``: n pending deliveries stalled for ten minutes, inserted at once; their ids."""

    def insert(count: int) -> list[str]:
        old = db.now() - timedelta(minutes=10)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "notification_id": str(uuid.uuid4()),
                "channel": "email",
                "recipient": f"user{i}@example.com",
                "adapter": "fake",
                "created_at": old,
                "updated_at": old,
            }
            for i in range(count)
        ]
        Delivery.insert_many(rows).execute()
        return [row["id"] for row in rows]

    return insert
