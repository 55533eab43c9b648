"""Adapter discovery through the ``chimeway.adapters`` entry-point group, and their options.

Built-in adapters register exactly like third-party ones; nothing in ``chimeway`` imports them by
module path. Names are known from the entry points without importing anything; an adapter's module
is imported when it is first used or configured.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from chimeway.adapter import Adapter
from chimeway.errors import ConfigurationError
from chimeway.wiring.config import Settings

GROUP = "chimeway.adapters"


def discover() -> dict[str, EntryPoint]:
    """Every adapter name installed in this environment, without importing any of them."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


class Registry:
    """The configured adapters of one runtime: validated options, one shared instance per name."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        extra: Mapping[str, type[Adapter]] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        _quiet_httpx()
        self._entry_points = discover()
        self._classes: dict[str, type[Adapter]] = dict(extra or {})
        self._instances: dict[str, Adapter] = {}
        self._lock = threading.Lock()
        self._options = settings.adapters
        self._failover_names = sorted({*settings.failover, *settings.failover.values()})
        self._rate_limited = sorted(settings.rate_limits)
        self.default_adapter = settings.default_adapter
        self.channel_adapters = dict(settings.channel_adapters)
        self._checked: set[str] = set()  #: adapters whose required options are known to be present
        # Fail now, not in a worker: every adapter named by the settings must exist and accept its
        # options. Missing required options (secrets) are checked only where the adapter is used, so
        # `chimeway status` or `migrate` never need every adapter's API key: see check() and resolve().
        for name, variable in self._named_in_settings():
            self._check_known(name, variable)
        for name in self._named():
            self.options_for(name, require=False)
        self.failover = dict(settings.failover)
        self._check_failover()

    def _named(self) -> set[str]:
        named = set(self._options) | set(self.channel_adapters.values()) | {self.default_adapter}
        return named | set(self._failover_names)

    def configured(self) -> list[str]:
        """Every adapter the settings name (channels, default, options, failover, rate limits)."""
        return sorted(self._named() | set(self._rate_limited))

    def _check_failover(self) -> None:
        """Each failover target serves every channel its predecessor serves ("any" serves all)."""
        for name, target in self.failover.items():
            serves, target_serves = self.adapter_class(name).channel, self.adapter_class(target).channel
            if target_serves not in ("any", serves):
                raise ConfigurationError(
                    f"CHIMEWAY_FAILOVER: adapter {target!r} serves {target_serves!r}, not {serves!r} as {name!r} "
                    f"does; a failover target must serve the same channel",
                    variable="CHIMEWAY_FAILOVER",
                )

    def check(self) -> None:
        """Every adapter the settings name has its required options: a worker calls it at start."""
        for name in sorted(self._named()):
            self._require(name)

    def _require(self, name: str) -> None:
        if name not in self._checked:
            self.options_for(name)
            self._checked.add(name)

    def variables(self) -> list[str]:
        """Every CHIMEWAY_* variable the installed adapters read (imports each of them)."""
        found = []
        for name in self.known:
            cls = self.adapter_class(name)
            found += [env_name(name, option) for option in cls.options]
            found += list(cls.environment)
        return found

    def _named_in_settings(self) -> list[tuple[str, str]]:
        named = [(self.default_adapter, "CHIMEWAY_DEFAULT_ADAPTER")]
        named += [(name, "CHIMEWAY_CHANNEL_ADAPTERS") for name in self.channel_adapters.values()]
        named += [(name, "adapters=") for name in self._options]
        named += [(name, "CHIMEWAY_FAILOVER") for name in self._failover_names]
        named += [(name, "CHIMEWAY_RATE_LIMITS") for name in self._rate_limited]
        return named

    @property
    def known(self) -> list[str]:
        return sorted(set(self._entry_points) | set(self._classes))

    def _check_known(self, name: str, variable: str | None = None) -> None:
        if name not in self._entry_points and name not in self._classes:
            where = f" (from {variable})" if variable else ""
            raise ConfigurationError(
                f"unknown adapter {name!r}{where}; known adapters: {', '.join(self.known) or 'none'}",
                variable=variable,
            )

    def adapter_for_channel(self, channel: str) -> str:
        return self.channel_adapters.get(channel, self.default_adapter)

    def resolve(self, name: str | None, channel: str) -> str:
        """The adapter name a send uses; raises ConfigurationError naming the known ones if unknown."""
        chosen = name or self.adapter_for_channel(channel)
        self._check_known(chosen, None if name else "CHIMEWAY_CHANNEL_ADAPTERS")
        self._require(chosen)  # a send to an adapter that could never perform it fails now, not in a worker
        return chosen

    def adapter_class(self, name: str) -> type[Adapter]:
        self._check_known(name)
        if name not in self._classes:
            loaded = self._entry_points[name].load()
            if not (isinstance(loaded, type) and issubclass(loaded, Adapter)):
                raise ConfigurationError(f"adapter {name!r} does not subclass chimeway.adapter.Adapter")
            self._classes[name] = loaded
        return self._classes[name]

    def options_for(self, name: str, *, require: bool = True) -> dict[str, Any]:
        """Validated options: ``adapters={name: {...}}`` arguments, else CHIMEWAY_<NAME>_<OPTION>, else
        defaults; a missing required option raises unless ``require`` is false."""
        cls = self.adapter_class(name)
        given = dict(self._options.get(name, {}))
        unknown = sorted(set(given) - set(cls.options))
        if unknown:
            raise ConfigurationError(
                f"unknown option {unknown[0]!r} for adapter {name!r}; it accepts: "
                f"{', '.join(sorted(cls.options)) or 'no options'}",
                variable=env_name(name, unknown[0]),
            )
        values: dict[str, Any] = {}
        for option_name, option in cls.options.items():
            variable = env_name(name, option_name)
            if given.get(option_name) is not None:  # None means "not given": the default applies
                raw = given[option_name]
            elif self._environ.get(variable) not in (None, ""):
                raw = self._environ[variable]
            elif option.required and not require:
                continue
            elif option.required:
                raise ConfigurationError(
                    f"adapter {name!r} needs {variable} (or adapters={{{name!r}: {{{option_name!r}: ...}}}})",
                    variable=variable,
                )
            else:
                values[option_name] = option.default
                continue
            try:
                values[option_name] = option.parse(raw)
            except (TypeError, ValueError) as err:
                shown = "<hidden>" if option.secret else repr(raw)
                raise ConfigurationError(
                    f"invalid {variable}: {shown}; {option.doc or err}", variable=variable
                ) from None
        return values

    def get(self, name: str) -> Adapter:
        """The shared instance of an adapter (adapters must be safe to call from many threads)."""
        instance = self._instances.get(name)
        if instance is None:
            with self._lock:
                instance = self._instances.get(name)
                if instance is None:
                    instance = self.adapter_class(name)(**self.options_for(name))
                    self._instances[name] = instance
        return instance

    def close(self) -> None:
        for instance in self._instances.values():
            instance.close()
        self._instances.clear()


def _quiet_httpx() -> None:
    """httpx logs every request at INFO with its URL, and a webhook URL often embeds a token (Slack,
    Teams…): quiet that logger by default, for built-in and custom adapters alike. An application
    that set the logger's level itself keeps it (set ``INFO`` to see those lines again)."""
    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
        httpx_logger.setLevel(logging.WARNING)


def env_name(adapter: str, option: str) -> str:
    return f"CHIMEWAY_{adapter}_{option}".upper().replace("-", "_")
