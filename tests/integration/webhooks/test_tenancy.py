"""Tenants are isolated in provider webhooks: their keys, their secrets, their names in the URL."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest

from chimeway.errors import ConfigurationError
from chimeway.models import Delivery, Event, Suppression, WebhookEvent
from chimeway.webhooks import handle
from chimeway.webhooks.wsgi import application


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def open_event(event_id: int, message_id: str) -> str:
    return json.dumps({"RecordType": "Open", "ID": event_id, "MessageID": message_id, "Recipient": "x@example.com",
                       "ReceivedAt": "2026-01-01T10:00:00Z"})


def hard_bounce(event_id: int, message_id: str) -> str:
    return json.dumps({"RecordType": "Bounce", "ID": event_id, "Type": "HardBounce", "TypeCode": 1,
                       "MessageID": message_id, "Email": "ann@example.com", "BouncedAt": "2026-01-01T11:00:00Z"})


def test_given_globex_used_a_postmark_event_id_when_acme_posts_a_bounce_with_that_id_then_acme_s_is_stored(
    webhooks, secrets, make_delivery
) -> None:
    # Given globex's open, Postmark event ID 5001
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    globex = make_delivery("postmark", "pm-globex", tenant_id="globex", recipient="bob@example.com")
    acme = make_delivery("postmark", "pm-acme", tenant_id="acme", recipient="ann@example.com")
    assert handle("postmark", auth, open_event(5001, "pm-globex"), "globex") == (200, "ok")
    # When acme's genuine hard bounce carries the same ID (another Postmark account)
    assert handle("postmark", auth, hard_bounce(5001, "pm-acme"), "acme") == (200, "ok")
    # Then both events are in the ledger, each in its tenant, and acme's bounce is projected and suppressed
    assert sorted((e.tenant_id, e.type, e.delivery_id) for e in Event.select()) == sorted(
        [("globex", "opened", globex.id), ("acme", "bounced", acme.id)]
    )
    assert Delivery.get_by_id(acme.id).bounced_at is not None
    assert Delivery.get_by_id(globex.id).opened_at is not None
    assert [(s.tenant_id, s.address, s.reason) for s in Suppression.select()] == [
        ("acme", "ann@example.com", "hard_bounce")
    ]


def test_given_the_same_request_posted_to_two_tenants_then_each_stores_it_and_a_replay_stays_a_duplicate(
    webhooks, secrets
) -> None:
    # Postmark requests carry no request id: the raw row's key is the body's hash, the same for both tenants.
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    body = open_event(7, "pm-shared")
    assert handle("postmark", auth, body, "acme") == (200, "ok")
    assert handle("postmark", auth, body, "globex") == (200, "ok")
    assert handle("postmark", auth, body, "globex") == (200, "duplicate")
    assert sorted(w.tenant_id for w in WebhookEvent.select()) == ["acme", "globex"]
    assert sorted(e.tenant_id for e in Event.select()) == ["acme", "globex"]


# --- per-tenant credentials ----------------------------------------------------------------------------

TENANT_SECRETS = {
    "acme": {"postmark_webhook_user": "acme-hook", "postmark_webhook_password": "acme-secret"},
    "globex": {"postmark_webhook_user": "globex-hook", "postmark_webhook_password": "globex-secret"},
}


def lookup(tenant_id: str, provider: str) -> dict[str, str] | None:
    return TENANT_SECRETS.get(tenant_id) if provider == "postmark" else None


@pytest.fixture
def per_tenant(webhooks_with):
    return webhooks_with(webhook_credentials=lookup)


def test_given_per_tenant_credentials_when_a_tenant_posts_with_its_own_secret_then_it_is_stored(
    per_tenant, make_delivery
) -> None:
    delivery = make_delivery("postmark", "pm-1", tenant_id="acme")
    assert handle("postmark", basic("acme-hook", "acme-secret"), open_event(1, "pm-1"), "acme") == (200, "ok")
    assert Event.get().delivery_id == delivery.id


def test_given_per_tenant_credentials_when_another_tenant_s_secret_is_used_then_it_is_refused_and_nothing_stored(
    per_tenant, secrets, counts
) -> None:
    before = counts()
    assert handle("postmark", basic("globex-hook", "globex-secret"), open_event(2, "pm-2"), "acme").status == 401
    # nor do the global CHIMEWAY_POSTMARK_WEBHOOK_* secrets open a tenant that has its own
    global_auth = basic(secrets.postmark_user, secrets.postmark_password)
    assert handle("postmark", global_auth, open_event(3, "pm-3"), "acme").status == 401
    assert counts() == before


def test_given_per_tenant_credentials_when_a_tenant_has_none_then_404_and_nothing_stored(
    per_tenant, secrets, counts
) -> None:
    before = counts()
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    assert handle("postmark", auth, open_event(4, "pm-4"), "initech") == (404, "unknown tenant")
    assert handle("postmark", auth, open_event(4, "pm-4")) == (404, "unknown tenant")  # the default tenant too
    assert counts() == before


def test_given_a_lookup_answering_other_settings_then_500_names_the_expected_ones_and_no_secret(
    webhooks_with, counts
) -> None:
    webhooks_with(webhook_credentials=lambda tenant, provider: {"postmark_webhook_user": "leaky-value"})
    before = counts()
    status, body = handle("postmark", basic("leaky-value", "x"), open_event(5, "pm-5"), "acme")
    assert status == 500 and "postmark_webhook_password" in body and "leaky-value" not in body
    assert counts() == before


def test_given_webhook_credentials_that_are_not_callable_then_configure_refuses_them(webhooks_with) -> None:
    with pytest.raises(ConfigurationError, match="invalid webhook_credentials=.*expected a function") as refused:
        webhooks_with(webhook_credentials={"acme": "acme-secret"})
    assert "acme-secret" not in str(refused.value)  # a mapping given by mistake may hold secrets


# --- the tenant in the URL and in handle() -----------------------------------------------------------

INVALID_TENANTS = ["t\n", "..", ".hidden", "a" * 65, "", "acme corp", "é"]
VALID_TENANTS = ["acme", "a" * 64, "A1_b.c-d", "7"]


@pytest.mark.parametrize("tenant", INVALID_TENANTS)
def test_given_an_invalid_tenant_id_when_handle_is_called_then_404_and_nothing_stored(
    webhooks, secrets, counts, tenant
) -> None:
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    assert handle("postmark", auth, open_event(6, "pm-6"), tenant) == (404, "unknown tenant")
    assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}


@pytest.mark.parametrize("tenant", VALID_TENANTS)
def test_given_a_valid_tenant_id_when_handle_is_called_then_the_event_is_stored_in_it(webhooks, secrets, tenant):
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    assert handle("postmark", auth, open_event(6, "pm-6"), tenant) == (200, "ok")
    assert Event.get().tenant_id == tenant


def call(path: str, headers: dict[str, str], body: bytes) -> str:
    """The WSGI application called as a server calls it, with an already-decoded PATH_INFO."""
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    application(environ, lambda status, _headers: statuses.append(status))
    return statuses[0]


@pytest.mark.parametrize("tenant", INVALID_TENANTS[:-3])  # "", a space and "é" never reach a segment
def test_given_an_invalid_tenant_segment_when_posted_then_404_and_nothing_stored(webhooks, secrets, counts, tenant):
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    assert call(f"/webhooks/{tenant}/postmark", auth, open_event(8, "pm-8").encode()).startswith("404")
    assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}


def test_given_a_percent_encoded_newline_in_the_tenant_segment_when_posted_over_http_then_404(
    server, secrets, counts
) -> None:
    auth = basic(secrets.postmark_user, secrets.postmark_password)
    with httpx.Client() as client:
        refused = client.post(f"{server}/webhooks/t%0A/postmark", content=open_event(9, "pm-9"), headers=auth)
        accepted = client.post(f"{server}/webhooks/{'a' * 64}/postmark", content=open_event(9, "pm-9"), headers=auth)
    assert (refused.status_code, accepted.status_code) == (404, 200)
    assert [e.tenant_id for e in Event.select()] == ["a" * 64]
