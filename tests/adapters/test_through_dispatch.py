"""Real adapters through the whole send path: chimeway.send → worker → adapter → attempt row.

The ``postmark`` adapter talks to the local provider-shaped server; what lands in the database
(the delivery's provider message id and state, each attempt's provider_response and error_message)
is checked, including that no credential and no recipient is stored on an attempt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chimeway
from chimeway.store.migrator import migrate
from chimeway.testing import drain, start_worker
from chimeway.wiring.runtime import Runtime, configure, reset
from tests.adapters.servers import LocalHttpServer, PostmarkSpeaker, Speaker

TOKEN = "pm-token-through-dispatch-77"
RECIPIENT = "customer@example.com"
PAYLOAD = {"subject": "Your receipt", "text": "Thanks for your order."}


@dataclass
class Stack:
    runtime: Runtime
    server: LocalHttpServer
    speaker: PostmarkSpeaker


@pytest.fixture
def stack(tmp_path: Path, http_server: Callable[[Speaker], LocalHttpServer]) -> Iterator[Stack]:
    speaker = PostmarkSpeaker(TOKEN)
    server = http_server(speaker)
    runtime = configure(
        database_url=f"sqlite:///{tmp_path / 'chimeway.sqlite3'}",
        redis_url="",
        environ={},
        backoff_min_ms=0,
        backoff_max_ms=20,
        channel_adapters={"email": "postmark"},
        adapters={
            "postmark": {
                "server_token": TOKEN,
                "from": "shop@shop.example",
                "base_url": server.url,
                "timeout": 5,
            }
        },
    )
    migrate(runtime.database)
    try:
        yield Stack(runtime, server, speaker)
    finally:
        reset()


def deliver(stack: Stack, *scenarios: str, **send: Any) -> Any:
    stack.server.script(*scenarios)
    with start_worker(stack.runtime, threads=2):
        delivery = chimeway.send("email", RECIPIENT, PAYLOAD, **send)
        drain(stack.runtime)
    return chimeway.get_delivery(delivery.id)


def stored(attempt: Any) -> str:
    """Everything an attempt row keeps about the provider's answer."""
    return json.dumps([attempt.provider_response, attempt.error_message, attempt.provider_message_id])


def test_given_an_accepting_provider_then_the_delivery_keeps_its_message_id(stack: Stack) -> None:
    delivery = deliver(stack, "ok")
    assert delivery.status == "succeeded"
    assert delivery.provider == "postmark"
    assert delivery.provider_message_id == stack.speaker.message_ids[-1]
    [attempt] = chimeway.attempts(delivery.id)
    assert attempt.provider_message_id == delivery.provider_message_id
    assert attempt.provider_response == {"status": 200}
    assert TOKEN not in stored(attempt) and RECIPIENT not in stored(attempt)


def test_given_a_temporary_failure_then_the_retry_succeeds_with_the_same_request(stack: Stack) -> None:
    delivery = deliver(stack, "temporary", "ok", max_attempts=3)
    assert delivery.status == "succeeded"
    first, second = chimeway.attempts(delivery.id)
    assert (first.outcome, first.error_class) == ("failed", "temporary")
    assert first.provider_response == {
        "status": 503,
        "reason": "HTTP 503: the provider is unavailable or rate limiting",
    }
    assert second.outcome == "succeeded"
    assert stack.server.requests[0].json() == stack.server.requests[1].json()


def test_given_an_inactive_recipient_then_bounced_and_nothing_secret_or_personal_is_stored(
    stack: Stack,
) -> None:
    delivery = deliver(stack, "bounced")
    assert (delivery.status, delivery.reason) == ("cancelled", "bounced")
    [attempt] = chimeway.attempts(delivery.id)
    assert attempt.error_class == "bounced"
    assert attempt.provider_response["error_code"] == 406
    assert TOKEN not in stored(attempt) and RECIPIENT not in stored(attempt)


def test_given_rate_limiting_on_the_last_attempt_then_exhausted_with_retry_after_kept(stack: Stack) -> None:
    delivery = deliver(stack, "rate_limited", max_attempts=1)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")
    [attempt] = chimeway.attempts(delivery.id)
    assert attempt.provider_response == {
        "status": 429,
        "error_code": 429,
        "reason": "rate limit exceeded",
        "retry_after": 7.0,
    }


# -- the webhook adapter refusing a private address ---------------------------------------------------

WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="


def test_given_a_webhook_url_on_loopback_then_cancelled_permanent_failure_with_an_attempt_saying_why(
    tmp_path: Path, http_server: Callable[[Speaker], LocalHttpServer]
) -> None:
    receiver = http_server(Speaker())  # never answers: no request must reach it
    runtime = configure(
        database_url=f"sqlite:///{tmp_path / 'chimeway.sqlite3'}",
        redis_url="",
        environ={},
        channel_adapters={"webhook": "webhook"},
        adapters={"webhook": {"secret": WEBHOOK_SECRET, "timeout": 5}},
    )
    migrate(runtime.database)
    url = f"http://localhost:{receiver.httpd.server_address[1]}/hooks/T1/private-token"
    try:
        with start_worker(runtime, threads=2):
            delivery = chimeway.send("webhook", url, {"type": "invoice.paid"}, max_attempts=3)
            drain(runtime)
        delivery = chimeway.get_delivery(delivery.id)
        [attempt] = chimeway.attempts(delivery.id)
    finally:
        reset()
    assert (delivery.status, delivery.reason) == ("cancelled", "permanent_failure")
    assert (attempt.outcome, attempt.error_class) == ("rejected", "permanent")
    assert attempt.provider_response == {"error": "refused_address", "address_kind": "loopback"}
    assert "loopback address" in attempt.error_message
    assert "CHIMEWAY_WEBHOOK_ALLOWED_NETWORKS" in attempt.error_message
    assert "private-token" not in stored(attempt)
    assert receiver.connections == 0
