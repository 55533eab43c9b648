"""Where an HTTP adapter may connect, how long a call may last and how much of an answer is read.

The webhook adapter posts to a URL the sender chose, so it refuses every address that is not on the
public internet unless ``allowed_networks`` (``CHIMEWAY_WEBHOOK_ALLOWED_NETWORKS``) opens it. A
local server that counts accepted connections proves a refused call never connects. Every HTTP
adapter's ``timeout`` bounds the whole call, and at most 64 KiB of an answer is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from chimeway_adapters._http import MAX_RESPONSE_BYTES
from chimeway_adapters.webhook import WebhookAdapter

from chimeway.adapter import PermanentError, SendRequest, TemporaryError
from chimeway.errors import ConfigurationError
from chimeway.wiring.config import load_settings
from chimeway.wiring.registry import Registry
from tests.adapters.servers import TEST_TIMEOUT, LocalHttpServer, Reply, Speaker
from tests.adapters.test_adapter_contract import WEBHOOK_SECRET, make_request


class Answering(Speaker):
    """Answers every request with the reply the test sets (204 until then)."""

    def __init__(self) -> None:
        self.next = Reply(204)

    def reply(self, scenario: str, request: Any) -> Reply:
        return self.next


@pytest.fixture
def server(http_server: Callable[[Speaker], LocalHttpServer]) -> LocalHttpServer:
    return http_server(Answering())


@pytest.fixture
def webhook() -> Iterator[Callable[..., Any]]:
    """Builds the webhook adapter as the runtime does (options validated by the registry)."""
    registries: list[Registry] = []

    def build(**options: Any) -> Any:
        settings = load_settings(
            environ={}, adapters={"webhook": {"secret": WEBHOOK_SECRET, "timeout": TEST_TIMEOUT, **options}}
        )
        registries.append(Registry(settings, environ={}))
        return registries[-1].get("webhook")

    yield build
    for registry in registries:
        registry.close()


def post(adapter: Any, url: str) -> Any:
    return adapter.send(make_request(url, {"type": "ping"}, channel="webhook"))


# -- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "2130706433", "127.1"])
def test_given_a_loopback_host_in_any_spelling_then_refused_permanently_without_connecting(
    server: LocalHttpServer, webhook: Callable[..., Any], host: str
) -> None:
    # localhost is a name we control that resolves to a private address: the resolved address decides.
    port = server.httpd.server_address[1]
    with pytest.raises(PermanentError) as caught:
        post(webhook(), f"http://{host}:{port}/hooks/T1/secret-path")
    assert caught.value.response == {"error": "refused_address", "address_kind": "loopback"}
    assert "secret-path" not in str(caught.value)
    assert server.connections == 0


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("169.254.169.254", "link_local"),  # cloud metadata
        ("[fd00:ec2::254]", "private"),  # AWS metadata over IPv6
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.100.100.200", "carrier_grade_nat"),  # Alibaba metadata
        ("192.0.0.192", "special_purpose"),  # Oracle metadata
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("[::1]", "loopback"),
        ("[fe80::1]", "link_local"),
        ("[::ffff:169.254.169.254]", "link_local"),  # IPv4-mapped
        ("[2002:a9fe:a9fe::]", "link_local"),  # 6to4
        ("[64:ff9b::a9fe:a9fe]", "link_local"),  # NAT64
        ("[::ffff:10.0.0.1]", "private"),
    ],
)
def test_given_a_non_public_address_then_refused_before_any_connection(
    webhook: Callable[..., Any], host: str, kind: str
) -> None:
    # Nothing listens there: had the adapter tried, the outcome would be a temporary connection error.
    with pytest.raises(PermanentError) as caught:
        post(webhook(timeout=2), f"http://{host}:81/hook")
    assert caught.value.response == {"error": "refused_address", "address_kind": kind}


def test_given_allowed_networks_then_that_network_is_reached_and_the_host_header_kept(
    server: LocalHttpServer, webhook: Callable[..., Any]
) -> None:
    port = server.httpd.server_address[1]
    result = post(webhook(allowed_networks="10.0.0.0/8, 127.0.0.0/8"), f"http://localhost:{port}/hook")
    assert result.response == {"status": 204}
    assert server.connections == 1
    assert server.last.headers["host"] == f"localhost:{port}"


def test_given_allowed_networks_that_do_not_cover_the_host_then_still_refused(
    server: LocalHttpServer, webhook: Callable[..., Any]
) -> None:
    port = server.httpd.server_address[1]
    with pytest.raises(PermanentError):
        post(webhook(allowed_networks="10.0.0.0/8"), f"http://127.0.0.1:{port}/hook")
    assert server.connections == 0


@pytest.mark.parametrize("value", ["bogus", "127.0.0.1/8", "10.0.0.0/33", "127.0.0.0/8,,nope"])
def test_given_invalid_allowed_networks_then_configure_fails_naming_the_variable(value: str) -> None:
    settings = load_settings(environ={}, channel_adapters={"webhook": "webhook"})
    environ = {"CHIMEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET, "CHIMEWAY_WEBHOOK_ALLOWED_NETWORKS": value}
    with pytest.raises(ConfigurationError) as caught:
        Registry(settings, environ=environ)
    assert caught.value.variable == "CHIMEWAY_WEBHOOK_ALLOWED_NETWORKS"
    assert "CIDR" in str(caught.value)


def test_given_user_and_password_in_the_url_then_refused_without_connecting(
    server: LocalHttpServer, webhook: Callable[..., Any]
) -> None:
    port = server.httpd.server_address[1]
    with pytest.raises(PermanentError) as caught:
        post(webhook(allowed_networks="127.0.0.0/8"), f"http://admin:hunter2@127.0.0.1:{port}/hook")
    assert caught.value.response == {"error": "invalid_recipient", "reason": "userinfo"}
    assert "hunter2" not in str(caught.value)
    assert server.connections == 0


# -- the deadline and the size of an answer ------------------------------------------------------


@pytest.mark.parametrize("trickle_from", ["head", "body"])
def test_given_a_server_trickling_its_answer_then_the_call_ends_as_a_temporary_timeout(
    server: LocalHttpServer, webhook: Callable[..., Any], trickle_from: str
) -> None:
    # Each byte comes well within the timeout, so only a deadline on the whole call can end it.
    server.speaker.next = Reply(200, b"x" * 80, trickle=0.05, trickle_from=trickle_from)  # type: ignore[attr-defined]
    adapter = webhook(timeout=1, allowed_networks="127.0.0.0/8")
    with pytest.raises(TemporaryError) as caught:
        post(adapter, f"{server.url}/hook")
    assert caught.value.response == {"error": "timeout", "timeout_seconds": 1.0}


class Measuring(WebhookAdapter):
    """The webhook adapter, telling how much of each accepted answer it was given."""

    name = "measuring"
    seen: list[int]

    def message_id(self, response: httpx.Response, request: SendRequest) -> str:
        self.seen.append(len(response.content))
        return super().message_id(response, request)


def test_given_a_huge_answer_then_only_64_kib_is_read(
    server: LocalHttpServer, http_server: Callable[[Speaker], LocalHttpServer]
) -> None:
    size = 64 * 1024 * 1024  # far beyond what the kernel's socket buffers hold
    server.speaker.next = Reply(200, b"x" * size, {"Content-Type": "text/plain"})  # type: ignore[attr-defined]
    settings = load_settings(
        environ={}, adapters={"measuring": {"secret": WEBHOOK_SECRET, "allowed_networks": "127.0.0.0/8"}}
    )
    registry = Registry(settings, environ={}, extra={"measuring": Measuring})
    try:
        adapter = registry.get("measuring")
        adapter.seen = []
        post(adapter, f"{server.url}/hook")
    finally:
        registry.close()
    assert adapter.seen == [MAX_RESPONSE_BYTES]
    server.close()  # joins the handler: it has finished writing, or given up
    assert server.sent_whole_body == [False]


# -- TLS through the checked address -----------------------------------------------------------------


def test_given_https_then_the_certificate_is_verified_for_the_urls_host(
    http_server: Callable[..., LocalHttpServer], webhook: Callable[..., Any], certificates: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = http_server(Answering(), certificates.server_context())
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))  # the test CA, trusted
    assert post(webhook(allowed_networks="127.0.0.0/8"), f"{server.url}/hook").response == {"status": 204}
    monkeypatch.delenv("SSL_CERT_FILE")  # the same server, no longer trusted
    with pytest.raises(TemporaryError) as caught:
        post(webhook(allowed_networks="127.0.0.0/8"), f"{server.url}/hook")
    assert caught.value.response == {"error": "connection"}
    assert len(server.requests) == 1
