"""The installed webhook provider names, read from the ``chimeway.webhook_providers`` entry points.

Apart from the provider classes (and from the settings they read) so that the settings can check a
provider name without importing any provider (docs/architecture.md §6).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

GROUP = "chimeway.webhook_providers"


@functools.cache
def discover() -> dict[str, tuple[EntryPoint, ...]]:
    """Every webhook provider name installed in this environment, with the entry points registering
    it (one each, unless distributions clash), without importing any provider."""
    found: dict[str, tuple[EntryPoint, ...]] = {}
    for entry in entry_points(group=GROUP):
        found[entry.name] = (*found.get(entry.name, ()), entry)
    return found


def names() -> list[str]:
    """The installed provider names, sorted; imports no provider."""
    return sorted(discover())
