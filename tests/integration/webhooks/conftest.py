"""Fixtures for the webhook tests: Chimeway configured with every provider's secret, on each dialect.

``secrets`` are generated per session (a fresh P-256 key pair for SendGrid, random HMAC keys);
``webhooks`` is the configured runtime; ``make_delivery`` writes a delivery row as an adapter would
have left it after the provider accepted the send (provider + provider_message_id); ``orphan``
writes an orphan as ingest would have, with its ``received_at`` in the past (the ledger refuses
UPDATE, so age is given at insert); ``counts`` counts the rows a webhook may write.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from chimeway import db
from chimeway.models import Delivery, Event, Suppression, WebhookEvent
from chimeway.webhooks import ledger
from chimeway.webhooks.wsgi import make
from chimeway.wiring import runtime as runtime_mod


@dataclass(frozen=True)
class Secrets:
    postmark_user: str
    postmark_password: str
    sendgrid_private_key: Any  #: cryptography EC private key: the tests sign as SendGrid would
    sendgrid_public_key: str  #: base64 DER SPKI, as SendGrid's settings page shows it
    mailgun_key: str
    standard_secret: str  #: whsec_…

    def settings(self) -> dict[str, str]:
        return {
            "postmark_webhook_user": self.postmark_user,
            "postmark_webhook_password": self.postmark_password,
            "sendgrid_webhook_public_key": self.sendgrid_public_key,
            "mailgun_webhook_signing_key": self.mailgun_key,
            "standard_webhook_secret": self.standard_secret,
        }


@pytest.fixture(scope="session")
def secrets() -> Secrets:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Secrets(
        postmark_user="postmark-hook",
        postmark_password=base64.urlsafe_b64encode(os.urandom(18)).decode(),
        sendgrid_private_key=private,
        sendgrid_public_key=base64.b64encode(public).decode(),
        mailgun_key=os.urandom(16).hex(),
        standard_secret="whsec_" + base64.b64encode(os.urandom(24)).decode(),
    )


def configure(database_url: str, secrets: Secrets, **settings: Any) -> runtime_mod.Runtime:
    options = {"redis_url": "", "environ": {}, **secrets.settings(), **settings}
    return runtime_mod.configure(database_url=database_url, **options)


@pytest.fixture
def webhooks(database_url: str, secrets: Secrets) -> Iterator[runtime_mod.Runtime]:
    """Chimeway with every provider configured, on the parametrized database, without Redis."""
    # A namespace of its own: the in-memory reconcile-run claims are keyed by it.
    runtime = configure(database_url, secrets, redis_namespace=f"t{uuid.uuid4().hex[:12]}")
    yield runtime
    runtime_mod.reset()


@pytest.fixture
def pg_webhooks(pg_url: str, secrets: Secrets) -> Iterator[runtime_mod.Runtime]:
    """Chimeway with every provider configured on PostgreSQL, without Redis."""
    runtime = configure(pg_url, secrets)
    yield runtime
    runtime_mod.reset()


@pytest.fixture
def webhooks_redis(pg_url: str, secrets: Secrets, redis_url: str, redis_namespace: str) -> Iterator[runtime_mod.Runtime]:
    """Chimeway on PostgreSQL with Redis (its own key namespace) for broadcasts and claims."""
    runtime = configure(pg_url, secrets, redis_url=redis_url, redis_namespace=redis_namespace)
    yield runtime
    runtime_mod.reset()


@pytest.fixture
def make_delivery() -> Callable[..., Delivery]:
    def make(
        provider: str,
        provider_message_id: str,
        *,
        tenant_id: str = "default",
        recipient: str = "ann@example.com",
        status: str = "succeeded",
        channel: str = "email",
    ) -> Delivery:
        return Delivery.create(
            tenant_id=tenant_id,
            notification_id=str(uuid.uuid4()),
            channel=channel,
            recipient=recipient,
            adapter=provider,
            provider=provider,
            provider_message_id=provider_message_id,
            status=status,
        )

    return make


def _counts() -> dict[str, int]:
    return {
        "webhook_events": WebhookEvent.select().count(),
        "events": Event.select().count(),
        "suppressions": Suppression.select().count(),
    }


@pytest.fixture
def counts() -> Callable[[], dict[str, int]]:
    """Rows in the tables a webhook may write."""
    return _counts


def _orphan(
    provider: str,
    provider_message_id: str,
    *,
    tenant_id: str = "default",
    event_type: str = "delivered",
    age_seconds: float = 3600,
    occurred_at: Any = None,
    reject_reason: str | None = None,
) -> str:
    received = db.now() - timedelta(seconds=age_seconds)
    event = ledger.LedgerEvent(
        tenant_id=tenant_id,
        type=event_type,
        provider=provider,
        occurred_at=occurred_at or received,
        received_at=received,
        idempotency_key=f"{provider}:{uuid.uuid4().hex}:0",
        provider_message_id=provider_message_id,
        provider_event_id=uuid.uuid4().hex,
        needs_reconciliation=True,
        reject_reason=reject_reason,
    )
    with db.transaction():
        assert ledger.append(db.database(), [event]) == {event.id}
    return event.id


@pytest.fixture
def orphan() -> Callable[..., str]:
    """Write an orphan as ingest would have, received ``age_seconds`` ago (default an hour); its id."""
    return _orphan


@pytest.fixture
def webhooks_with(database_url: str, secrets: Secrets) -> Iterator[Callable[..., runtime_mod.Runtime]]:
    """Configure Chimeway on the parametrized database with extra settings (``name=None`` unsets one)."""

    def make(**settings: Any) -> runtime_mod.Runtime:
        return configure(database_url, secrets, **settings)

    yield make
    runtime_mod.reset()


@pytest.fixture
def server(webhooks: runtime_mod.Runtime) -> Iterator[str]:
    """The development server (``chimeway webhooks serve``) on a free port, in a thread: its base URL."""
    httpd = make("127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        webhooks.database.close()  # the server thread's connection (SQLite keeps one per thread)
