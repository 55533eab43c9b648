"""Webhook providers by name. Modules load on first use (the crypto libraries are an extra)."""

from __future__ import annotations

from importlib import import_module

from chimeway.webhooks.providers.base import Provider

#: provider name (the URL segment) -> "module:class"
PROVIDERS: dict[str, str] = {
    "postmark": "chimeway.webhooks.providers.postmark:PostmarkProvider",
    "sendgrid": "chimeway.webhooks.providers.sendgrid:SendgridProvider",
    "mailgun": "chimeway.webhooks.providers.mailgun:MailgunProvider",
    "standard": "chimeway.webhooks.providers.standard:StandardProvider",
}


def provider_class(name: str) -> type[Provider] | None:
    """The provider registered under ``name``, or None for an unknown provider."""
    target = PROVIDERS.get(name)
    if target is None:
        return None
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)
