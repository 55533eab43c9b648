"""Webhook providers by name, found through the ``chimeway.webhook_providers`` entry-point group.

Built-in providers register exactly as third-party ones do (setup.cfg); nothing here imports them
by module path, and the entry-point name is the URL segment (``/webhooks/<provider>``). Names are
known without importing any provider (``CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS`` is validated against
them); a provider's module is imported when a request first names it, since some need an extra
(SendGrid's crypto).

The installed entry points are read once per process: a distribution installed while the process
runs is found after a restart (tests call ``discover.cache_clear()``).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from chimeway.errors import ConfigurationError
from chimeway.webhooks.providers.base import Provider
from chimeway.webhooks.providers.installed import GROUP, discover, names

__all__ = ["GROUP", "discover", "names", "provider_class"]


def _origin(entry: EntryPoint) -> str:
    distribution = entry.dist.name if entry.dist is not None else "an unknown distribution"
    return f"{distribution} ({entry.value})"


def provider_class(name: str) -> type[Provider] | None:
    """The provider registered under ``name``, or None for an unknown provider (the endpoint's 404).

    ConfigurationError when two distributions register ``name``, or when the registered object is
    not a :class:`Provider` subclass or is one whose ``name`` differs from its entry point's: events
    are stored under ``Provider.name``, so a provider must answer under the name it is linked by."""
    entries = discover().get(name)
    if entries is None:  # the name comes from a URL: nothing is cached or imported for it
        return None
    if len(entries) > 1:
        # Which one answers must not depend on the order of sys.path. Only this name fails: the
        # other providers keep answering.
        raise ConfigurationError(
            f"webhook provider {name!r} is registered by {len(entries)} distributions: "
            f"{' and '.join(map(_origin, entries))}; uninstall all but one"
        )
    (entry,) = entries
    loaded = entry.load()  # after the first request, a lookup in sys.modules
    if not (isinstance(loaded, type) and issubclass(loaded, Provider)):
        raise ConfigurationError(
            f"webhook provider {name!r} from {_origin(entry)} does not subclass "
            "chimeway.webhooks.providers.base.Provider"
        )
    if getattr(loaded, "name", None) != name:
        raise ConfigurationError(
            f"webhook provider {name!r} from {_origin(entry)} has name = {getattr(loaded, 'name', None)!r}; "
            "the entry point and Provider.name must be the same"
        )
    return loaded
