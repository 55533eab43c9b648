"""A custom HTTP adapter, written as the README's "Writing an adapter" shows: its own httpx client,
Chimeway's public classification (``http_error``, ``parse_retry_after``) for the provider's answers.

Also: no adapter call — built-in or custom — leaves httpx's per-request INFO line (which carries the
URL, and a webhook URL often embeds a token) in the application's logs, unless the application set
httpx's log level itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import httpx
import pytest

from chimeway.adapter import (
    Adapter,
    BouncedError,
    Classification,
    Option,
    PermanentError,
    SendRequest,
    SendResult,
    TemporaryError,
    http_error,
    parse_retry_after,
)
from chimeway.wiring.config import load_settings
from chimeway.wiring.registry import Registry
from tests.adapters.servers import LocalHttpServer, Reply, Speaker
from tests.adapters.test_adapter_contract import WEBHOOK_SECRET, make_request

TOKEN_PATH = "/hooks/T0001/B0002/xoxb-private-path-token"


class Acme(Speaker):
    """A provider answering ``{"id": …}`` or ``{"code": n}`` by scenario."""

    def reply(self, scenario: str, request: Any) -> Reply:
        return {
            "ok": Reply(201, {"id": "acme-1"}),
            "rate_limited": Reply(429, {"code": 42, "message": "slow down, +15550100"}, {"Retry-After": "7"}),
            "unknown_number": Reply(400, {"code": 1001, "message": "+15550100 does not exist"}),
            "bad_request": Reply(400, {"code": 9999}),
            "gone": Reply(410),
            "unavailable": Reply(503, b"down"),
        }[scenario]


class AcmeAdapter(Adapter):
    """A third party's adapter: plain httpx, Chimeway's classification."""

    name = "acme"
    channel = "sms"
    options: ClassVar[dict[str, Option]] = {"base_url": Option(required=True)}
    ERROR_CODES: ClassVar[dict[int, Classification]] = {1001: (BouncedError, "no such number")}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.client = httpx.Client(base_url=self.config["base_url"], timeout=5)

    def send(self, request: SendRequest) -> SendResult:
        try:
            response = self.client.post(TOKEN_PATH, json={"to": request.recipient})
        except httpx.HTTPError as err:
            raise TemporaryError(f"acme: {type(err).__name__}") from err
        if response.status_code >= 300:
            code = response.json().get("code") if response.content.startswith(b"{") else None
            raise http_error(
                "acme",
                response.status_code,
                code=code,
                outcome=self.ERROR_CODES.get(code),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return SendResult(provider="acme", provider_message_id=response.json()["id"])

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def acme(http_server: Callable[[Speaker], LocalHttpServer]) -> Iterator[tuple[Adapter, LocalHttpServer]]:
    server = http_server(Acme())
    settings = load_settings(environ={}, channel_adapters={"sms": "acme"}, adapters={"acme": {"base_url": server.url}})
    registry = Registry(settings, environ={}, extra={"acme": AcmeAdapter})
    yield registry.get("acme"), server
    registry.close()


def failure(acme: tuple[Adapter, LocalHttpServer], scenario: str) -> Any:
    adapter, server = acme
    server.script(scenario)
    with pytest.raises((TemporaryError, PermanentError, BouncedError)) as caught:
        adapter.send(make_request("+15550100", {}, channel="sms"))
    return caught.value


def test_given_429_with_retry_after_then_temporary_with_the_wait_and_no_provider_text(acme: Any) -> None:
    error = failure(acme, "rate_limited")
    assert type(error) is TemporaryError
    assert error.retry_after == 7
    assert error.response == {
        "status": 429,
        "error_code": 42,
        "reason": "HTTP 429: the provider is unavailable or rate limiting",
        "retry_after": 7.0,
    }
    assert "+15550100" not in str(error)


def test_given_a_code_in_the_adapters_table_then_its_outcome(acme: Any) -> None:
    error = failure(acme, "unknown_number")
    assert type(error) is BouncedError
    assert error.response == {"status": 400, "error_code": 1001, "reason": "no such number"}
    assert str(error) == "acme: HTTP 400 (error code 1001): no such number"


@pytest.mark.parametrize(
    ("scenario", "error_class"),
    [("bad_request", PermanentError), ("gone", PermanentError), ("unavailable", TemporaryError)],
)
def test_given_an_unknown_code_or_none_then_the_status_class_decides(
    acme: Any, scenario: str, error_class: type[Exception]
) -> None:
    assert type(failure(acme, scenario)) is error_class


# -- httpx's request log line ------------------------------------------------------------------------


@pytest.fixture
def httpx_level_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's logger as an application that never configured it has it (restored afterwards)."""
    monkeypatch.setattr(logging.getLogger("httpx"), "level", logging.NOTSET)


def http_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]


def test_given_a_custom_adapter_call_at_info_then_no_httpx_line_shows_its_url(
    httpx_level_unset: None, acme: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    adapter, server = acme
    adapter.send(make_request("+15550100", {}, channel="sms"))
    assert server.requests  # the call was made
    assert not [line for line in http_lines(caplog) if "xoxb-private-path-token" in line]


def test_given_a_webhook_adapter_call_at_info_then_no_httpx_line_shows_its_url(
    httpx_level_unset: None, http_server: Callable[[Speaker], LocalHttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.adapters.servers import WebhookReceiver

    server = http_server(WebhookReceiver(WEBHOOK_SECRET))
    caplog.set_level(logging.INFO)
    settings = load_settings(
        environ={}, adapters={"webhook": {"secret": WEBHOOK_SECRET, "allowed_networks": "127.0.0.0/8"}}
    )
    registry = Registry(settings, environ={})
    try:
        registry.get("webhook").send(make_request(server.url + TOKEN_PATH, {"type": "ping"}, channel="webhook"))
    finally:
        registry.close()
    assert server.requests
    assert not [line for line in http_lines(caplog) if "xoxb-private-path-token" in line]


def test_given_an_application_that_set_httpx_to_info_then_its_choice_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging.getLogger("httpx"), "level", logging.INFO)
    Registry(load_settings(environ={}), environ={}).close()
    assert logging.getLogger("httpx").level == logging.INFO
