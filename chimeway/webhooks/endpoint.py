"""``handle(provider, headers, body, tenant_id=None) -> (status, body)``: the framework-free core.

Order (docs/architecture.md §6): unknown provider or tenant (404; see :mod:`chimeway.webhooks.tenancy`;
a provider whose installation is broken answers 500, the reason in the log) →
size limit (413) → the tenant's secrets (404 when it has none) → verify (401; a provider whose secret
is unset answers 500 naming the setting; a format never accepted 406) → parse (400; an authentic
request whose text the ledger cannot store is kept as a ``failed`` raw row) → one transaction (raw
row, ledger, projection, suppressions) → commit → broadcast → 200. A database failure answers 503 so the provider
retries. Bodies are short fixed texts: a response never echoes the payload, and nothing of the
request (headers, addresses, body) reaches the logs or telemetry.

Django, Flask or FastAPI views call :func:`handle` with the raw body bytes and the request headers;
:mod:`chimeway.webhooks.wsgi` serves it to any WSGI server.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import peewee
from playhouse.pool import MaxConnectionsExceeded

from chimeway import db as dbmod
from chimeway import telemetry
from chimeway.errors import ChimewayError, ConfigurationError
from chimeway.store import pubsub
from chimeway.webhooks import ledger, tenancy
from chimeway.webhooks.ingest import ingest
from chimeway.webhooks.providers import provider_class
from chimeway.webhooks.providers.base import (
    NotConfigured,
    Unauthorized,
    Unstorable,
    WebhookRejected,
    WebhookRequest,
)
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.webhooks")

#: Failures of the database (or of reaching it): the provider should retry later.
DATABASE_ERRORS = (peewee.PeeweeException, MaxConnectionsExceeded, ChimewayError)


class Response(NamedTuple):
    status: int
    body: str


def handle(
    provider: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str,
    tenant_id: str | None = None,
    *,
    runtime: Runtime | None = None,
) -> Response:
    """Verify, store and project one provider webhook request; the HTTP status and a short body.

    ``tenant_id`` None is the ``default`` tenant; an id that is not a plain name (see
    :mod:`chimeway.webhooks.tenancy`) answers 404 like an unknown tenant. Without ``runtime``, the
    configured one (an entry point: docs/architecture.md §2)."""
    if runtime is None:
        from chimeway.wiring.runtime import current

        runtime = current()
    tenant = tenancy.DEFAULT_TENANT if tenant_id is None else tenant_id
    try:
        known = provider_class(provider)
    except ConfigurationError as err:  # an installation problem (names a registered provider, never the request)
        logger.error("webhook provider refused: %s", err)
        return Response(500, "provider misconfigured")
    if known is None:
        return Response(404, "unknown provider")
    if not tenancy.valid(tenant):
        return Response(404, "unknown tenant")
    with telemetry.span("ingest", provider=provider, tenant_id=tenant) as report:
        # A str body with a lone surrogate keeps it as invalid UTF-8, which the JSON decode then refuses (400).
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
        response = _handle(known, runtime, tenant, headers, raw, report)
        report["http_status"] = response.status
    return response


def _handle(provider_cls: Any, runtime: Runtime, tenant: str, headers: Any, body: bytes, report: dict) -> Response:
    name = provider_cls.name
    if len(body) > runtime.settings.webhook_max_bytes:
        return Response(413, "payload too large")
    request = WebhookRequest(headers=_lower(headers), body=body, received_at=dbmod.now())
    unstorable = None
    try:
        settings = tenancy.settings_for(runtime.settings, tenant, provider_cls)
        if settings is None:
            return Response(404, "unknown tenant")
        parsed = provider_cls(settings).process(request)
    except NotConfigured as err:
        logger.error("%s webhook refused: %s", name, err.reason)
        return Response(err.status, err.reason)
    except Unauthorized as err:
        logger.warning("%s webhook failed verification: %s", name, err.reason)
        return Response(err.status, "unauthorized")
    except Unstorable as err:
        logger.warning("%s webhook kept as a failed raw request: %s", name, err.reason)
        unstorable = err
    except WebhookRejected as err:
        logger.warning("%s webhook malformed: %s", name, err.reason)
        return Response(err.status, err.reason)
    try:
        if unstorable is not None:
            # Authentic, but its events cannot be stored: keep the raw bytes (status failed) for an
            # operator and answer 400. A retry of the same request finds the row: a duplicate (200).
            with dbmod.transaction(runtime.database):
                kept = ledger.insert_raw(
                    runtime.database, tenant_id=tenant, provider=name, request_id=unstorable.request_id,
                    body=request.body, received_at=request.received_at, status="failed",
                )
            return Response(400, unstorable.reason) if kept else Response(200, "duplicate")
        result = ingest(name, tenant, request, parsed, runtime.database, functools.partial(pubsub.publish, runtime=runtime))
    except DATABASE_ERRORS as err:
        logger.error("%s webhook not stored, the provider will retry: %s", name, type(err).__name__)
        # A server restart leaves this thread's connection dead: drop it so the next request reconnects.
        dbmod.drop_broken_connection(runtime.database)
        return Response(503, "temporarily unavailable")
    report.update(event_count=result.stored, linked=result.linked, duplicate=result.duplicate)
    return Response(200, "duplicate" if result.duplicate else "ok")


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {str(key).lower(): str(value) for key, value in pairs}
