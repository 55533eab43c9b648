"""Provider webhooks: verify → normalize → ledger + projection → reconcile orphans later.

``handle(provider, headers, body, tenant_id=None) -> (status, body)`` is the framework-free core;
``application`` is the WSGI app for ``POST /webhooks/<provider>`` and ``/webhooks/<tenant>/<provider>``.
Importing defines functions only: nothing connects until one is called.
"""

from __future__ import annotations

from chimeway.webhooks.endpoint import Response, handle
from chimeway.webhooks.pruner import prune
from chimeway.webhooks.reconciler import ReconcileResult, reconcile, reconcile_orphans
from chimeway.webhooks.wsgi import application, serve

__all__ = [
    "ReconcileResult",
    "Response",
    "application",
    "handle",
    "prune",
    "reconcile",
    "reconcile_orphans",
    "serve",
]
