"""Policy tests run on both dialects (the ``configured`` fixture) with rows written through the models."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chimeway import policy
from chimeway.models import Delivery
from chimeway.wiring import runtime as runtime_mod


@pytest.fixture(autouse=True)
def builtin_rules_only() -> Iterator[None]:
    policy.reset()
    yield
    policy.reset()


@pytest.fixture
def reconfigure(configured: runtime_mod.Runtime) -> Callable[..., runtime_mod.Runtime]:
    """Configure again on the same database with extra settings (e.g. a delivery cap)."""

    def apply(**settings: Any) -> runtime_mod.Runtime:
        return runtime_mod.configure(
            database_url=configured.settings.database_url, redis_url="", environ={}, **settings
        )

    return apply


@pytest.fixture
def make_delivery(configured: runtime_mod.Runtime) -> Callable[..., Delivery]:
    """A pending delivery row; policy reads rows, it does not care how they were sent."""

    def create(**fields: Any) -> Delivery:
        values: dict[str, Any] = {
            "notification_id": str(uuid.uuid4()),
            "channel": "email",
            "recipient": "bob@example.com",
            "adapter": "fake",
        }
        values.update(fields)
        return Delivery.create(**values)

    return create
