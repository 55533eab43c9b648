"""One adapter contract, subclassed per built-in adapter (anymail style), each against a real local server.

:class:`AdapterContract` holds the cases every adapter keeps — success with a provider message id,
each error class, timeouts, refused connections, nothing secret or personal in what it returns,
raises or logs. :class:`HttpContract` adds what the shared HTTP layer promises — Retry-After,
the idempotency header, connection reuse. Each ``Test…Adapter`` fills the named steps (start its
server, arrange a scenario, say what the server saw) and adds its provider's own cases.

Adapters are built the way the runtime builds them: discovered through the ``chimeway.adapters``
entry points by :class:`chimeway.wiring.registry.Registry`, with validated options.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from chimeway.adapter import (
    Adapter,
    BouncedError,
    DeliveryError,
    PermanentError,
    SendRequest,
    SendResult,
    TemporaryError,
)
from chimeway.errors import ConfigurationError
from chimeway.wiring.config import load_settings
from chimeway.wiring.registry import Registry, discover
from tests.adapters.servers import (
    SHORT_TIMEOUT,
    SLOW_SECONDS,
    TEST_TIMEOUT,
    LocalHttpServer,
    LocalSmtpServer,
    PostmarkSpeaker,
    SendgridSpeaker,
    TwilioSpeaker,
    WebhookReceiver,
    free_port,
)


def make_request(
    recipient: str,
    payload: Mapping[str, Any],
    *,
    channel: str,
    delivery_id: str | None = None,
    attempt: int = 1,
) -> SendRequest:
    return SendRequest(
        delivery_id=delivery_id or str(uuid.uuid4()),
        tenant_id="default",
        channel=channel,
        recipient=recipient,
        payload=payload,
        metadata={},
        attempt_number=attempt,
        max_attempts=5,
    )


class AdapterContract:
    """What every adapter promises. Subclasses set the class attributes and fill the steps below."""

    adapter_name: ClassVar[str]
    channel: ClassVar[str]

    # -- steps a subclass fills ---------------------------------------------------------------------

    def start(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        """Start the local server; return the adapter options that point at it."""
        raise NotImplementedError

    def arrange(self, scenario: str) -> str:
        """Make the server answer the next send with ``scenario``; return the recipient to use."""
        raise NotImplementedError

    def unreachable(self) -> tuple[str, dict[str, Any]]:
        """(recipient, option overrides) that point at a port where nothing listens."""
        raise NotImplementedError

    def payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def observed_message_id(self) -> str:
        """The message id of the last accepted send, as the provider side knows it."""
        raise NotImplementedError

    #: option values that must never appear in results, errors or logs
    def secrets(self) -> list[str]:
        return [
            str(self.options[name])
            for name, option in self.adapter_class().options.items()
            if option.secret and self.options.get(name)
        ]

    # -- harness ------------------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _harness(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self.registries: list[Registry] = []
        self.options = self.start(request)
        yield
        for registry in self.registries:
            registry.close()

    def registry(self, drop: tuple[str, ...] = (), **overrides: Any) -> Registry:
        """A registry configuring this adapter with the server's options, ``overrides`` and without ``drop``."""
        options = {k: v for k, v in {**self.options, **overrides}.items() if k not in drop}
        settings = load_settings(environ={}, adapters={self.adapter_name: options})
        registry = Registry(settings, environ={})
        self.registries.append(registry)
        return registry

    def adapter(self, drop: tuple[str, ...] = (), **overrides: Any) -> Adapter:
        return self.registry(drop, **overrides).get(self.adapter_name)

    def adapter_class(self) -> type[Adapter]:
        return discover()[self.adapter_name].load()

    def request(self, scenario: str = "ok", **kwargs: Any) -> SendRequest:
        return make_request(self.arrange(scenario), self.payload(), channel=self.channel, **kwargs)

    def send(self, scenario: str = "ok", adapter: Adapter | None = None, **kwargs: Any) -> SendResult:
        return (adapter or self.adapter()).send(self.request(scenario, **kwargs))

    def failure(self, scenario: str, adapter: Adapter | None = None) -> DeliveryError:
        with pytest.raises(DeliveryError) as caught:
            self.send(scenario, adapter)
        return caught.value

    # -- the contract -------------------------------------------------------------------------------

    def test_it_is_discovered_through_the_entry_point_group_from_the_chimeway_adapters_package(self) -> None:
        cls = self.adapter_class()
        assert issubclass(cls, Adapter)
        assert cls.name == self.adapter_name
        assert cls.channel == self.channel
        assert cls.__module__ == f"chimeway_adapters.{self.adapter_name}"

    def test_given_an_accepting_provider_when_sending_then_the_provider_message_id_is_returned(self) -> None:
        result = self.send("ok")
        assert isinstance(result, SendResult)
        assert result.provider == self.adapter_name
        assert result.provider_message_id
        assert result.provider_message_id == self.observed_message_id()

    def test_given_a_provider_failing_for_now_when_sending_then_temporary_error(self) -> None:
        assert type(self.failure("temporary")) is TemporaryError

    def test_given_a_provider_refusing_the_message_when_sending_then_permanent_error(self) -> None:
        assert type(self.failure("permanent")) is PermanentError

    def test_given_an_unreachable_recipient_when_sending_then_bounced_error(self) -> None:
        assert type(self.failure("bounced")) is BouncedError

    def test_given_a_provider_slower_than_the_timeout_when_sending_then_temporary_error_in_time(self) -> None:
        started = time.monotonic()
        error = self.failure("slow", self.adapter(timeout=SHORT_TIMEOUT))
        assert type(error) is TemporaryError
        assert time.monotonic() - started < SLOW_SECONDS

    def test_given_nothing_listening_when_sending_then_temporary_error(self) -> None:
        recipient, overrides = self.unreachable()
        adapter = self.adapter(**overrides)
        with pytest.raises(TemporaryError):
            adapter.send(make_request(recipient, self.payload(), channel=self.channel))

    def test_given_one_instance_shared_by_many_threads_then_every_send_succeeds(self) -> None:
        adapter = self.adapter()
        requests = [self.request("ok") for _ in range(16)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(adapter.send, requests))
        ids = [result.provider_message_id for result in results]
        assert all(ids) and len(set(ids)) == len(ids)

    def test_no_secret_and_no_recipient_reach_results_errors_or_logs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        adapter, impatient = self.adapter(), self.adapter(timeout=SHORT_TIMEOUT)
        shown: list[str] = []
        recipients: list[str] = []
        for scenario in ("ok", "temporary", "permanent", "bounced", "slow"):
            request = self.request(scenario)
            recipients.append(request.recipient)
            try:
                result = (impatient if scenario == "slow" else adapter).send(request)
            except DeliveryError as err:
                shown += [str(err), repr(err), repr(err.response), repr(getattr(err, "retry_after", None))]
            else:
                shown += [repr(result.response), repr(result)]
        # Everything logged in this process, except the local SMTP server's own log (aiosmtpd's "mail.log").
        shown += [f"{r.name} {r.getMessage()}" for r in caplog.records if not r.name.startswith("mail.")]
        text = "\n".join(shown)
        assert self.secrets(), "the test must know the adapter's secret values"
        for secret in self.secrets():
            assert secret not in text
        for recipient in set(recipients):
            if self.recipient_is_private:
                assert recipient not in text

    #: whether the recipient itself must stay out of errors (an email address, a phone number, a URL)
    recipient_is_private: ClassVar[bool] = True


class HttpContract(AdapterContract):
    """What the shared HTTP layer adds to the contract."""

    server: LocalHttpServer

    def test_given_429_with_retry_after_seconds_when_sending_then_the_delay_is_honoured(self) -> None:
        error = self.failure("rate_limited")
        assert type(error) is TemporaryError
        assert error.retry_after == 7
        assert error.response["retry_after"] == 7
        assert error.response["status"] == 429

    def test_given_two_attempts_of_one_delivery_then_the_idempotency_header_is_the_same_or_absent(
        self,
    ) -> None:
        adapter = self.adapter()
        delivery_id = str(uuid.uuid4())
        with pytest.raises(TemporaryError):
            self.send("temporary", adapter, delivery_id=delivery_id, attempt=1)
        self.send("ok", adapter, delivery_id=delivery_id, attempt=2)
        first, second = self.server.requests[-2:]
        header = self.adapter_class().idempotency_header  # type: ignore[attr-defined]
        if header is None:  # the provider documents none: we send none
            assert "idempotency-key" not in first.headers and "idempotency-key" not in second.headers
        else:
            key = f"chimeway-{delivery_id}"
            assert first.headers[header.lower()] == second.headers[header.lower()] == key

    def test_given_several_sends_then_one_connection_is_reused(self) -> None:
        adapter = self.adapter()
        self.send("ok", adapter)
        self.send("ok", adapter)
        assert self.server.requests[-1].peer == self.server.requests[-2].peer

    def test_given_a_closed_adapter_when_sending_then_temporary_error_and_close_is_idempotent(self) -> None:
        adapter = self.adapter()
        self.send("ok", adapter)
        adapter.close()
        adapter.close()
        with pytest.raises(TemporaryError) as caught:
            self.send("ok", adapter)
        assert caught.value.response == {"error": "closed"}


class ApiContract(HttpContract):
    """An HTTP API provider (Postmark, SendGrid, Twilio): a fixed recipient and a base_url option."""

    recipient: ClassVar[str]

    def make_speaker(self) -> Any:
        raise NotImplementedError

    def credentials(self) -> dict[str, Any]:
        raise NotImplementedError

    def start(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        self.speaker = self.make_speaker()
        self.server = request.getfixturevalue("http_server")(self.speaker)
        return {**self.credentials(), "base_url": self.server.url, "timeout": TEST_TIMEOUT}

    def arrange(self, scenario: str) -> str:
        self.server.script(scenario)
        return self.recipient

    def unreachable(self) -> tuple[str, dict[str, Any]]:
        return self.recipient, {"base_url": f"http://127.0.0.1:{free_port()}"}

    def observed_message_id(self) -> str:
        return self.speaker.message_ids[-1]


EMAIL_PAYLOAD = {
    "subject": "Your receipt",
    "text": "Thanks for your order.",
    "html": "<p>Thanks for your order.</p>",
}

EMAIL_API_PAYLOAD = {
    **EMAIL_PAYLOAD,
    "headers": {"X-Order": "42"},
    "tag": "receipt",
    "metadata": {"order": 42},
}

# -- SMTP ---------------------------------------------------------------------------------------------


class TestSmtpAdapter(AdapterContract):
    adapter_name = "smtp"
    channel = "email"
    SCENARIO_RECIPIENTS: ClassVar[dict[str, str]] = {
        "ok": "ok@example.com",
        "temporary": "busy@example.com",
        "permanent": "policy@example.com",
        "bounced": "unknown@example.com",
        "slow": "slow@example.com",
    }

    def start(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        self.request_fixture = request
        self.smtp: LocalSmtpServer = request.getfixturevalue("smtp_server")(
            login=("mailer", "s3cret-smtp-password")
        )
        return {
            "host": self.smtp.host,
            "port": self.smtp.port,
            "username": "mailer",
            "password": "s3cret-smtp-password",
            "timeout": TEST_TIMEOUT,
            "from": "Shop <shop@shop.example>",
        }

    def arrange(self, scenario: str) -> str:
        return self.SCENARIO_RECIPIENTS.get(scenario, f"{scenario}@example.com")

    def unreachable(self) -> tuple[str, dict[str, Any]]:
        return "ok@example.com", {"port": free_port()}

    def payload(self) -> dict[str, Any]:
        return dict(EMAIL_PAYLOAD)

    def observed_message_id(self) -> str:
        return self.smtp.handler.messages[-1]["Message-ID"]

    def test_the_message_arrives_with_sender_subject_both_bodies_and_extra_headers(self) -> None:
        payload = {**EMAIL_PAYLOAD, "headers": {"Reply-To": "help@shop.example"}}
        self.adapter().send(make_request("ok@example.com", payload, channel="email"))
        message = self.smtp.handler.messages[-1]
        assert self.smtp.handler.envelopes[-1] == ("shop@shop.example", ["ok@example.com"])
        assert self.smtp.logins == [("mailer", "s3cret-smtp-password")]
        assert message["Subject"] == "Your receipt"
        assert message["Reply-To"] == "help@shop.example"
        assert message.get_content_type() == "multipart/alternative"
        assert message.get_body(("plain",)).get_content().strip() == "Thanks for your order."
        assert message.get_body(("html",)).get_content().strip() == "<p>Thanks for your order.</p>"

    def test_the_message_id_is_generated_once_per_delivery_and_kept_across_attempts(self) -> None:
        adapter = self.adapter()
        delivery_id = str(uuid.uuid4())
        first = adapter.send(
            make_request("ok@example.com", self.payload(), channel="email", delivery_id=delivery_id)
        )
        second = adapter.send(
            make_request(
                "ok@example.com", self.payload(), channel="email", delivery_id=delivery_id, attempt=2
            )
        )
        assert (
            first.provider_message_id
            == second.provider_message_id
            == f"<chimeway.{delivery_id}@shop.example>"
        )
        assert [m["Message-ID"] for m in self.smtp.handler.messages] == [first.provider_message_id] * 2

    def test_given_a_provider_option_then_the_result_names_that_provider_for_webhook_matching(self) -> None:
        result = self.adapter(provider="mailgun").send(
            make_request("ok@example.com", self.payload(), channel="email")
        )
        assert result.provider == "mailgun"

    def test_given_550_without_an_enhanced_code_at_rcpt_then_bounced(self) -> None:
        error = self.failure("nomx")
        assert type(error) is BouncedError
        assert error.response == {"smtp_code": 550, "stage": "rcpt"}

    def test_given_a_bounce_then_the_response_keeps_code_enhanced_code_and_stage_only(self) -> None:
        error = self.failure("bounced")
        assert error.response == {"smtp_code": 550, "stage": "rcpt", "enhanced_code": "5.1.1"}

    def test_given_mailbox_full_then_permanent_not_bounced(self) -> None:
        assert type(self.failure("full")) is PermanentError

    def test_given_greylisting_at_data_then_temporary(self) -> None:
        error = self.failure("later")
        assert type(error) is TemporaryError
        assert error.response["stage"] == "data"

    def test_given_an_unknown_mailbox_reported_at_data_then_bounced(self) -> None:
        error = self.failure("gone")
        assert type(error) is BouncedError
        assert error.response == {"smtp_code": 550, "stage": "data", "enhanced_code": "5.1.1"}

    def test_given_spam_refusal_at_data_then_permanent(self) -> None:
        assert type(self.failure("spam")) is PermanentError

    def test_given_a_wrong_password_then_permanent_and_the_password_is_not_shown(self) -> None:
        adapter = self.adapter(password="wrong-password-value")
        with pytest.raises(PermanentError) as caught:
            adapter.send(make_request("ok@example.com", self.payload(), channel="email"))
        assert caught.value.response["stage"] == "auth"
        assert "wrong-password-value" not in str(caught.value) + repr(caught.value.response)

    def tls_server(self, tls: str, monkeypatch: pytest.MonkeyPatch, *, trusted: bool = True) -> Adapter:
        """A TLS server requiring a login over TLS, and an adapter for it; SSL_CERT_FILE trusts the test CA."""
        server = self.request_fixture.getfixturevalue("smtp_server")(
            login=("mailer", "s3cret-smtp-password"), tls=tls
        )
        if trusted:
            monkeypatch.setenv(
                "SSL_CERT_FILE", str(self.request_fixture.getfixturevalue("certificates").ca_file)
            )
        self.smtp = server
        return self.adapter(port=server.port, **{tls: True})

    @pytest.mark.parametrize("tls", ["starttls", "ssl"])
    def test_given_tls_with_a_trusted_certificate_then_login_and_message_go_encrypted(
        self, tls: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        adapter = self.tls_server(tls, monkeypatch)
        result = adapter.send(make_request("ok@example.com", self.payload(), channel="email"))
        assert result.provider_message_id == self.observed_message_id()
        assert self.smtp.logins == [("mailer", "s3cret-smtp-password")]
        assert self.smtp.handler.encrypted == [True]

    @pytest.mark.parametrize("tls", ["starttls", "ssl"])
    def test_given_tls_with_an_untrusted_certificate_then_permanent(
        self, tls: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        adapter = self.tls_server(tls, monkeypatch, trusted=False)
        with pytest.raises(PermanentError) as caught:
            adapter.send(make_request("ok@example.com", self.payload(), channel="email"))
        assert caught.value.response["error"] == "tls"
        assert self.smtp.handler.messages == []

    def test_given_a_server_requiring_starttls_and_a_client_not_using_it_then_permanent(self) -> None:
        server = self.request_fixture.getfixturevalue("smtp_server")(tls="starttls")
        with pytest.raises(PermanentError) as caught:
            self.adapter(drop=("username", "password"), port=server.port).send(
                make_request("ok@example.com", self.payload(), channel="email")
            )
        assert caught.value.response["smtp_code"] == 530

    def test_given_starttls_on_a_server_without_it_then_permanent(self) -> None:
        adapter = self.adapter(starttls=True, port=self.smtp.port)
        with pytest.raises(PermanentError) as caught:
            adapter.send(make_request("ok@example.com", self.payload(), channel="email"))
        assert caught.value.response == {"error": "not_supported", "stage": "tls"}

    def test_given_a_payload_without_a_body_then_permanent_before_connecting(self) -> None:
        with pytest.raises(PermanentError):
            self.adapter().send(make_request("ok@example.com", {"subject": "empty"}, channel="email"))
        assert self.smtp.handler.messages == []

    def test_given_a_header_with_a_line_break_then_permanent_before_connecting(self) -> None:
        payload = {**EMAIL_PAYLOAD, "headers": {"X-Note": "one\r\nBcc: everyone@example.com"}}
        with pytest.raises(PermanentError) as caught:
            self.adapter().send(make_request("ok@example.com", payload, channel="email"))
        assert caught.value.response == {"error": "invalid_payload", "field": "headers"}
        assert self.smtp.handler.messages == []

    def test_given_ssl_and_starttls_together_then_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            self.adapter(ssl=True, starttls=True)
        assert caught.value.variable == "CHIMEWAY_SMTP_SSL"


# -- webhook ------------------------------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="


class TestWebhookAdapter(HttpContract):
    adapter_name = "webhook"
    channel = "webhook"

    def start(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        self.receiver = WebhookReceiver(WEBHOOK_SECRET)
        self.server = request.getfixturevalue("http_server")(self.receiver)
        # The receiver is on loopback, which the webhook adapter refuses unless it is opened.
        return {"secret": WEBHOOK_SECRET, "timeout": TEST_TIMEOUT, "allowed_networks": "127.0.0.0/8"}

    def arrange(self, scenario: str) -> str:
        self.server.script(scenario)
        # Webhook URLs often embed a token (Slack, Teams): the recipient is private.
        return f"{self.server.url}/hooks/T0001/B0002/xoxb-private-path-token"

    def unreachable(self) -> tuple[str, dict[str, Any]]:
        return f"http://127.0.0.1:{free_port()}/hooks", {}

    def payload(self) -> dict[str, Any]:
        return {"type": "invoice.paid", "timestamp": "2026-11-23T09:00:00Z", "data": {"invoice": "in_42"}}

    def observed_message_id(self) -> str:
        return self.server.last.headers["webhook-id"]

    def test_the_body_is_the_payload_signed_with_standard_webhooks_headers(self) -> None:
        request = self.request("ok")
        self.adapter().send(request)
        received = self.server.last
        assert received.json() == self.payload()
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-id"] == request.idempotency_key
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert received.headers["webhook-signature"].startswith("v1,")
        assert self.receiver.verified[-1] == self.payload()  # the receiver's own verification passed

    def test_given_a_receiver_with_another_secret_then_it_refuses_and_we_get_permanent(self) -> None:
        adapter = self.adapter(secret="whsec_" + "b3RoZXItc2VjcmV0LWtleQ==")
        with pytest.raises(PermanentError) as caught:
            adapter.send(self.request("ok"))
        assert caught.value.response["status"] == 401

    def test_given_408_then_temporary(self) -> None:
        assert type(self.failure("request_timeout")) is TemporaryError

    def test_given_retry_after_as_an_http_date_then_seconds_until_then(self) -> None:
        error = self.failure("rate_limited_date")
        assert isinstance(error, TemporaryError)
        assert error.retry_after is not None and error.retry_after > 365 * 24 * 3600

    def test_given_a_redirect_then_permanent_and_not_followed(self) -> None:
        assert type(self.failure("redirect")) is PermanentError
        assert len(self.server.requests) == 1

    def test_given_a_recipient_that_is_not_a_url_then_permanent(self) -> None:
        with pytest.raises(PermanentError):
            self.adapter().send(make_request("ops@example.com", self.payload(), channel="webhook"))

    def test_given_an_invalid_secret_then_configure_fails_naming_the_variable_without_the_value(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            self.registry(secret="not base64 at all!!")
        assert caught.value.variable == "CHIMEWAY_WEBHOOK_SECRET"
        assert "not base64" not in str(caught.value)
        assert "<hidden>" in str(caught.value)


# -- Postmark -----------------------------------------------------------------------------------------

POSTMARK_TOKEN = "pm-server-token-0f9e8d7c"


class TestPostmarkAdapter(ApiContract):
    adapter_name = "postmark"
    channel = "email"
    recipient = "customer@example.com"

    def make_speaker(self) -> PostmarkSpeaker:
        return PostmarkSpeaker(POSTMARK_TOKEN)

    def credentials(self) -> dict[str, Any]:
        return {"server_token": POSTMARK_TOKEN, "from": "Shop <shop@shop.example>"}

    def payload(self) -> dict[str, Any]:
        return dict(EMAIL_API_PAYLOAD)

    def test_the_request_has_postmarks_documented_fields(self) -> None:
        request = self.request("ok")
        self.adapter().send(request)
        body = self.server.last.json()
        assert body == {
            "From": "Shop <shop@shop.example>",
            "To": "customer@example.com",
            "Subject": "Your receipt",
            "TextBody": "Thanks for your order.",
            "HtmlBody": "<p>Thanks for your order.</p>",
            "Headers": [{"Name": "X-Order", "Value": "42"}],
            "Tag": "receipt",
            "MessageStream": "outbound",
            "Metadata": {"order": "42", "chimeway_delivery_id": request.delivery_id},
        }
        assert self.server.last.headers["accept"] == "application/json"

    @pytest.mark.parametrize(
        "payload",
        [
            {"subject": "no body"},
            {"text": "hi", "headers": ["X-Not: a mapping"]},
            {"text": b"bytes are not JSON"},
        ],
    )
    def test_given_a_payload_that_can_never_be_sent_then_permanent_before_calling(
        self, payload: dict[str, Any]
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            self.adapter().send(make_request(self.recipient, payload, channel="email"))
        assert caught.value.response["error"] == "invalid_payload"
        assert self.server.requests == []

    def test_given_an_invalid_to_address_then_bounced(self) -> None:
        error = self.failure("invalid_to")
        assert type(error) is BouncedError
        assert error.response == {"status": 422, "error_code": 300, "reason": "invalid 'To' address"}

    def test_given_an_invalid_from_address_then_permanent(self) -> None:
        assert type(self.failure("invalid_from")) is PermanentError

    def test_given_an_inactive_recipient_then_bounced_with_code_406_and_our_words(self) -> None:
        error = self.failure("bounced")
        assert error.response["error_code"] == 406
        assert "inactive" in error.response["reason"]

    def test_given_a_wrong_token_then_permanent_with_code_10(self) -> None:
        with pytest.raises(PermanentError) as caught:
            self.send("ok", self.adapter(server_token="wrong-token"))
        assert caught.value.response["error_code"] == 10
        assert caught.value.response["status"] == 401

    def test_given_no_server_token_then_the_worker_check_fails_naming_the_variable(self) -> None:
        registry = self.registry(drop=("server_token",))  # configure alone passes: status needs no token
        with pytest.raises(ConfigurationError) as caught:
            registry.check()
        assert caught.value.variable == "CHIMEWAY_POSTMARK_SERVER_TOKEN"


# -- SendGrid -----------------------------------------------------------------------------------------

SENDGRID_KEY = "SG.test-key.0123456789abcdef"


class TestSendgridAdapter(ApiContract):
    adapter_name = "sendgrid"
    channel = "email"
    recipient = "customer@example.com"

    def make_speaker(self) -> SendgridSpeaker:
        return SendgridSpeaker(SENDGRID_KEY)

    def credentials(self) -> dict[str, Any]:
        return {"api_key": SENDGRID_KEY, "from": "Shop <shop@shop.example>"}

    def payload(self) -> dict[str, Any]:
        return dict(EMAIL_API_PAYLOAD)

    def test_the_request_has_sendgrids_documented_fields(self) -> None:
        request = self.request("ok")
        self.adapter().send(request)
        body = self.server.last.json()
        assert body == {
            "personalizations": [{"to": [{"email": "customer@example.com"}]}],
            "from": {"email": "shop@shop.example", "name": "Shop"},
            "subject": "Your receipt",
            "content": [
                {"type": "text/plain", "value": "Thanks for your order."},
                {"type": "text/html", "value": "<p>Thanks for your order.</p>"},
            ],
            "custom_args": {"order": "42", "chimeway_delivery_id": request.delivery_id},
            "headers": {"X-Order": "42"},
            "categories": ["receipt"],
        }

    def test_given_429_with_x_ratelimit_reset_then_the_delay_until_the_reset_is_honoured(self) -> None:
        error = self.failure("rate_limited_reset")
        assert isinstance(error, TemporaryError)
        assert error.retry_after is not None and 25 <= error.retry_after <= 30

    def test_given_a_400_about_another_field_then_permanent(self) -> None:
        assert type(self.failure("bad_request")) is PermanentError

    def test_given_a_wrong_key_then_permanent_401(self) -> None:
        with pytest.raises(PermanentError) as caught:
            self.send("ok", self.adapter(api_key="SG.wrong"))
        assert caught.value.response["status"] == 401


# -- Twilio -------------------------------------------------------------------------------------------

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-auth-token-55aa"


class TestTwilioAdapter(ApiContract):
    adapter_name = "twilio"
    channel = "sms"
    recipient = "+14155550100"

    def make_speaker(self) -> TwilioSpeaker:
        return TwilioSpeaker(TWILIO_SID, TWILIO_TOKEN)

    def credentials(self) -> dict[str, Any]:
        return {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, "from": "+14155550199"}

    def payload(self) -> dict[str, Any]:
        return {"body": "Your code is 123456"}

    def test_the_request_is_the_documented_form(self) -> None:
        self.send("ok")
        assert self.server.last.form() == {
            "To": ["+14155550100"],
            "From": ["+14155550199"],
            "Body": ["Your code is 123456"],
        }

    def test_media_and_status_callback_are_sent_as_documented(self) -> None:
        payload = {"media_url": ["https://cdn.example/a.png", "https://cdn.example/b.png"]}
        request = make_request(self.recipient, payload, channel="sms")
        self.adapter(status_callback="https://app.example/twilio/status").send(request)
        assert self.server.last.form() == {
            "To": ["+14155550100"],
            "From": ["+14155550199"],
            "MediaUrl": ["https://cdn.example/a.png", "https://cdn.example/b.png"],
            "StatusCallback": ["https://app.example/twilio/status"],
        }

    def test_given_an_api_key_then_it_authenticates_instead_of_the_account(self) -> None:
        self.speaker.credentials = {("SK" + "2" * 32, "api-key-secret-99")}
        result = self.send("ok", self.adapter(api_key_sid="SK" + "2" * 32, auth_token="api-key-secret-99"))
        assert result.provider_message_id == self.observed_message_id()
        assert self.server.last.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"

    def test_given_a_messaging_service_and_no_sender_then_it_is_used(self) -> None:
        self.send("ok", self.adapter(drop=("from",), messaging_service_sid="MG" + "1" * 32))
        assert self.server.last.form()["MessagingServiceSid"] == ["MG" + "1" * 32]
        assert "From" not in self.server.last.form()

    def test_given_an_unsubscribed_recipient_then_bounced_21610(self) -> None:
        error = self.failure("unsubscribed")
        assert type(error) is BouncedError
        assert error.response["error_code"] == 21610

    def test_given_a_message_created_already_failed_then_its_error_code_classifies_it(self) -> None:
        error = self.failure("created_failed")
        assert type(error) is BouncedError
        assert error.response == {"status": 201, "error_code": 30005, "reason": "unknown destination handset"}

    def test_given_a_wrong_token_then_permanent_20003(self) -> None:
        with pytest.raises(PermanentError) as caught:
            self.send("ok", self.adapter(auth_token="wrong"))
        assert caught.value.response["error_code"] == 20003

    def test_given_a_payload_without_body_or_media_then_permanent_before_calling(self) -> None:
        with pytest.raises(PermanentError):
            self.adapter().send(make_request("+14155550100", {}, channel="sms"))
        assert self.server.requests == []
