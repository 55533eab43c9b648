from __future__ import annotations

from collections.abc import Iterator

import pytest

from chimeway import policy


@pytest.fixture(autouse=True)
def builtin_rules_only() -> Iterator[None]:
    """Every test starts and ends with the built-in rules, whatever it registered."""
    policy.reset()
    yield
    policy.reset()
