"""Tenants in provider webhooks: which tenant ids a request may name, and whose secrets verify it.

A tenant id travels in the URL (``/webhooks/<tenant>/<provider>``) and into the ledger, the logs'
telemetry and the broadcasts, so it must be a plain name: :data:`TENANT_ID`, matched in full (a
trailing newline or ``..`` is no tenant). Without a tenant a request belongs to ``default``.

Secrets: ``configure(webhook_credentials=lookup)`` gives each tenant its own. ``lookup(tenant_id,
provider)`` returns that tenant's secrets for the provider as ``{setting name: value}`` with exactly
the provider's settings (e.g. ``postmark_webhook_user`` and ``postmark_webhook_password``), or None
when the tenant has none: the request answers 404 and nothing is stored. The global
``CHIMEWAY_*_WEBHOOK_*`` settings never verify a tenant the lookup answers for, so one tenant's
secret can never post into another. Without a lookup those settings verify every tenant.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from chimeway.webhooks.providers.base import NotConfigured
from chimeway.wiring.config import Settings

#: A tenant id: a letter or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The tenant of a request whose URL names none.
DEFAULT_TENANT = "default"


def valid(tenant_id: Any) -> bool:
    return isinstance(tenant_id, str) and TENANT_ID.fullmatch(tenant_id) is not None


def settings_for(settings: Settings, tenant_id: str, provider: Any) -> Settings | None:
    """The settings whose secrets verify ``tenant_id``'s requests from ``provider`` (a provider
    class); None when the tenant has none. NotConfigured (500, naming the problem, never a value)
    when the lookup answers something other than that provider's settings."""
    lookup = settings.webhook_credentials
    if lookup is None:
        return settings
    secrets = lookup(tenant_id, provider.name)
    if secrets is None:
        return None
    wanted = set(provider.required_settings)
    if not isinstance(secrets, Mapping) or set(secrets) != wanted:
        given = sorted(map(str, secrets)) if isinstance(secrets, Mapping) else type(secrets).__name__
        raise NotConfigured(
            f"webhook_credentials must return None or exactly {sorted(wanted)} for {provider.name}, not {given}"
        )
    if not all(isinstance(value, str) and value for value in secrets.values()):
        raise NotConfigured(f"webhook_credentials returned an empty or non-text {provider.name} secret")
    return dataclasses.replace(settings, **secrets)
