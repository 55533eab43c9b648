"""One contract, every provider (in the manner of anymail's tests/webhook_cases.py).

``ProviderContract`` holds the tests; each subclass says how its provider signs a request, builds
realistic events (the payloads follow the providers' documentation and the examples in anymail's
test suite) and, in its own literal table, what every provider code must become in the ledger.
Each test runs on SQLite and PostgreSQL, through ``chimeway.webhooks.handle``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from chimeway.models import Event, Suppression, WebhookEvent
from chimeway.webhooks import handle
from chimeway.webhooks.providers import mailgun, postmark, provider_class, sendgrid, standard
from chimeway.wiring import runtime as runtime_mod

Headers = dict[str, str]


class ProviderContract:
    provider: ClassVar[str]
    #: the variable a 500 names when the provider's secret is unset, and the settings to unset
    setting: ClassVar[str]
    unset: ClassVar[tuple[str, ...]]
    #: whether the signature covers a timestamp (and the body): Postmark's basic auth covers neither
    signs_timestamp: ClassVar[bool] = True
    signs_body: ClassVar[bool] = True
    #: ledger events one request of ``document()`` holds (SendGrid batches)
    events_per_request: ClassVar[int] = 1
    #: provider code -> (ledger type, reject reason), written out independently of the provider module
    expected: ClassVar[dict[Any, tuple[str, str | None]]]
    #: the provider module's own tables, whose every key ``expected`` must cover
    tables: ClassVar[tuple[dict, ...]]
    delivered: ClassVar[Any]
    hard_bounce: ClassVar[Any]
    soft_bounce: ClassVar[Any]
    complaint: ClassVar[Any]
    unknown: ClassVar[Any]
    #: a signed document whose fields have the wrong types
    misshapen: ClassVar[Any]

    # -- what each provider fills in ---------------------------------------------------------------

    def document(self, code: Any, message_id: str) -> Any:
        """A realistic event (or batch) of ``code`` for ``message_id``."""
        raise NotImplementedError

    def stored_message_id(self, message_id: str) -> str:
        """The provider message id the adapter stored at send time for ``message_id``."""
        return message_id

    def sign(self, secrets: Any, document: Any, *, timestamp: float | None = None, wrong_key: bool = False) -> tuple[Headers, bytes]:
        raise NotImplementedError

    def without_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        raise NotImplementedError

    def with_malformed_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        raise NotImplementedError

    def tampered(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        """The request altered after signing, in a part the signature covers."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------

    def post(self, secrets: Any, code: Any, message_id: str, **sign: Any) -> tuple[int, str]:
        headers, body = self.sign(secrets, self.document(code, message_id), **sign)
        return handle(self.provider, headers, body)

    @staticmethod
    def message_id() -> str:
        return uuid.uuid4().hex[:20]

    def event_for(self, message_id: str) -> Event:
        return Event.get(Event.provider_message_id == self.stored_message_id(message_id))

    # -- the contract ------------------------------------------------------------------------------

    def test_a_signed_delivered_event_is_stored_linked_and_projected(self, webhooks, secrets, make_delivery, counts) -> None:
        mid = self.message_id()
        delivery = make_delivery(self.provider, self.stored_message_id(mid))
        assert self.post(secrets, self.delivered, mid) == (200, "ok")
        assert counts() == {"webhook_events": 1, "events": self.events_per_request, "suppressions": 0}
        event = self.event_for(mid)
        assert (event.type, event.delivery_id, event.needs_reconciliation) == ("delivered", delivery.id, False)
        row = type(delivery).get_by_id(delivery.id)
        assert (row.last_event_type, row.delivered_at, row.lock_version) == ("delivered", event.occurred_at, 1)
        assert row.status == "succeeded"

    def test_the_provider_event_time_is_kept_not_the_time_of_receipt(self, webhooks, secrets) -> None:
        mid = self.message_id()
        self.post(secrets, self.delivered, mid)
        event = self.event_for(mid)
        assert event.occurred_at < event.received_at.replace(year=event.received_at.year - 1)

    def test_a_request_without_a_signature_is_refused_and_nothing_is_stored(self, webhooks, secrets, counts) -> None:
        headers, body = self.without_signature(*self.sign(secrets, self.document(self.delivered, self.message_id())))
        assert handle(self.provider, headers, body) == (401, "unauthorized")
        assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}

    def test_a_malformed_signature_is_refused_and_nothing_is_stored(self, webhooks, secrets, counts) -> None:
        headers, body = self.with_malformed_signature(*self.sign(secrets, self.document(self.delivered, self.message_id())))
        assert handle(self.provider, headers, body) == (401, "unauthorized")
        assert counts()["webhook_events"] == counts()["events"] == 0

    def test_a_signature_made_with_another_key_is_refused(self, webhooks, secrets, counts) -> None:
        assert self.post(secrets, self.delivered, self.message_id(), wrong_key=True) == (401, "unauthorized")
        assert counts()["webhook_events"] == counts()["events"] == 0

    def test_a_signature_older_than_the_tolerance_is_refused(self, webhooks, secrets, counts) -> None:
        if not self.signs_timestamp:
            pytest.skip(f"{self.provider} signs no timestamp")
        tolerance = provider_class(self.provider)(webhooks.settings).tolerance_seconds()
        too_old = time.time() - tolerance - 1
        assert self.post(secrets, self.delivered, self.message_id(), timestamp=too_old) == (401, "unauthorized")
        assert counts()["events"] == 0

    def test_a_signature_from_the_future_beyond_the_tolerance_is_refused(self, webhooks, secrets, counts) -> None:
        if not self.signs_timestamp:
            pytest.skip(f"{self.provider} signs no timestamp")
        assert self.post(secrets, self.delivered, self.message_id(), timestamp=time.time() + 301) == (401, "unauthorized")
        assert counts()["events"] == 0

    def test_a_signature_within_the_tolerance_is_accepted(self, webhooks, secrets) -> None:
        if not self.signs_timestamp:
            pytest.skip(f"{self.provider} signs no timestamp")
        assert self.post(secrets, self.delivered, self.message_id(), timestamp=time.time() - 240) == (200, "ok")

    def test_a_request_changed_after_signing_is_refused(self, webhooks, secrets, counts) -> None:
        if not self.signs_body:
            pytest.skip(f"{self.provider}'s credentials do not cover the body")
        headers, body = self.tampered(*self.sign(secrets, self.document(self.delivered, self.message_id())))
        assert handle(self.provider, headers, body) == (401, "unauthorized")
        assert counts()["events"] == 0

    def test_malformed_json_is_a_400_and_stores_nothing(self, webhooks, secrets, counts) -> None:
        headers, _ = self.sign(secrets, self.document(self.delivered, self.message_id()))
        status, text = handle(self.provider, self.resign(secrets, headers, b'{"event": "delivered", '), b'{"event": "delivered", ')
        assert (status, text) == (400, "body is not valid JSON")
        assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}

    def resign(self, secrets: Any, headers: Headers, body: bytes) -> Headers:
        """Headers that sign ``body`` as it is (providers that sign headers override)."""
        return headers

    def test_a_signed_event_of_an_unexpected_shape_is_a_400_and_stores_nothing(self, webhooks, secrets, counts) -> None:
        headers, body = self.sign(secrets, self.misshapen)
        assert handle(self.provider, headers, body)[0] == 400
        assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}

    def test_an_unknown_event_code_is_kept_as_unknown_with_its_raw_payload(self, webhooks, secrets) -> None:
        mid = self.message_id()
        assert self.post(secrets, self.unknown, mid) == (200, "ok")
        event = self.event_for(mid)
        assert event.type == "unknown"
        assert event.metadata["raw"] and json.dumps(event.metadata["raw"])  # the provider's event, kept whole

    def test_every_mapped_code_becomes_its_ledger_type(self, webhooks, secrets) -> None:
        covered = set(self.expected)
        for table in self.tables:
            missing = {self.table_key(table, code) for code in table} - covered
            assert not missing, f"codes without an expectation: {missing}"
        for code, (event_type, reason) in self.expected.items():
            mid = self.message_id()
            assert self.post(secrets, code, mid) == (200, "ok"), code
            event = self.event_for(mid)
            assert (event.type, event.reject_reason) == (event_type, reason), code

    def table_key(self, table: dict, code: Any) -> Any:
        return code

    def test_a_replayed_request_answers_200_and_changes_nothing(self, webhooks, secrets, make_delivery, counts) -> None:
        mid = self.message_id()
        delivery = make_delivery(self.provider, self.stored_message_id(mid))
        headers, body = self.sign(secrets, self.document(self.delivered, mid))
        assert handle(self.provider, headers, body) == (200, "ok")
        before = (counts(), type(delivery).get_by_id(delivery.id).lock_version)
        assert handle(self.provider, headers, body) == (200, "duplicate")
        assert (counts(), type(delivery).get_by_id(delivery.id).lock_version) == before == (
            {"webhook_events": 1, "events": self.events_per_request, "suppressions": 0},
            1,
        )

    def test_an_oversized_body_is_refused_with_413_before_verification(self, webhooks_with, secrets, counts) -> None:
        webhooks_with(webhook_max_bytes=64)
        headers, body = self.sign(secrets, self.document(self.delivered, self.message_id()))
        assert len(body) > 64
        assert handle(self.provider, headers, body) == (413, "payload too large")
        assert handle(self.provider, {}, body) == (413, "payload too large")
        assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}

    def test_a_provider_without_its_secret_answers_500_naming_the_setting(self, webhooks_with, secrets, counts) -> None:
        webhooks_with(**{name: None for name in self.unset})
        status, text = self.post(secrets, self.delivered, self.message_id())
        assert status == 500 and self.setting in text
        assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}

    def test_a_hard_bounce_suppresses_the_address_and_a_soft_bounce_does_not(self, webhooks, secrets, make_delivery) -> None:
        hard, soft = self.message_id(), self.message_id()
        make_delivery(self.provider, self.stored_message_id(hard), recipient="Hard@Example.com")
        make_delivery(self.provider, self.stored_message_id(soft), recipient="soft@example.com")
        assert self.post(secrets, self.hard_bounce, hard)[0] == 200
        assert self.post(secrets, self.soft_bounce, soft)[0] == 200
        rows = [(s.address, s.channel, s.reason, s.source) for s in Suppression.select()]
        assert rows == [("hard@example.com", "email", "hard_bounce", f"webhook:{self.provider}")]
        assert self.event_for(soft).type == "deferred"

    def test_a_complaint_suppresses_the_address(self, webhooks, secrets, make_delivery) -> None:
        mid = self.message_id()
        make_delivery(self.provider, self.stored_message_id(mid), recipient="cross@example.com")
        assert self.post(secrets, self.complaint, mid)[0] == 200
        assert [(s.address, s.reason) for s in Suppression.select()] == [("cross@example.com", "complaint")]


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestPostmark(ProviderContract):
    provider = "postmark"
    setting = "CHIMEWAY_POSTMARK_WEBHOOK_USER"
    unset = ("postmark_webhook_user", "postmark_webhook_password")
    signs_timestamp = signs_body = False
    tables = (postmark.RECORD_TYPES, postmark.BOUNCE_TYPE_CODES, postmark.SUPPRESSION_REASONS)
    delivered = ("Delivery", None)
    hard_bounce = ("Bounce", 1)
    soft_bounce = ("Bounce", 4096)
    complaint = ("SpamComplaint", None)
    unknown = ("Bounce", 2048)  # TypeCode "Unknown": Postmark could not classify it either
    misshapen = {"RecordType": "Bounce", "TypeCode": [1], "MessageID": "m-1"}
    expected = {
        ("Delivery", None): ("delivered", None),
        ("Open", None): ("opened", None),
        ("Click", None): ("clicked", None),
        ("SpamComplaint", None): ("complained", "spam"),
        ("Bounce", 1): ("bounced", "bounced"),
        ("Bounce", 2): ("deferred", None),
        ("Bounce", 16): ("unsubscribed", "unsubscribed"),
        ("Bounce", 32): ("subscribed", None),
        ("Bounce", 64): ("autoresponded", None),
        ("Bounce", 128): ("autoresponded", None),
        ("Bounce", 256): ("deferred", None),
        ("Bounce", 512): ("complained", "spam"),
        ("Bounce", 1024): ("deferred", None),
        ("Bounce", 4096): ("deferred", None),
        ("Bounce", 8192): ("bounced", "other"),
        ("Bounce", 16384): ("autoresponded", None),
        ("Bounce", 100000): ("rejected", "invalid"),
        ("Bounce", 100001): ("complained", "spam"),
        ("Bounce", 100002): ("rejected", "blocked"),
        ("Bounce", 100003): ("rejected", "other"),
        ("Bounce", 100006): ("rejected", "blocked"),
        ("Bounce", 100007): ("failed", None),
        ("Bounce", 100009): ("rejected", "blocked"),
        ("Bounce", 100010): ("failed", None),
        ("SubscriptionChange", "HardBounce"): ("bounced", "bounced"),
        ("SubscriptionChange", "SpamComplaint"): ("complained", "spam"),
        ("SubscriptionChange", "ManualSuppression"): ("unsubscribed", "unsubscribed"),
        ("SubscriptionChange", None): ("subscribed", None),
    }

    def table_key(self, table: dict, code: Any) -> Any:
        if table is postmark.BOUNCE_TYPE_CODES:
            return ("Bounce", code)
        if table is postmark.SUPPRESSION_REASONS:
            return ("SubscriptionChange", code)
        return (code, None)

    def document(self, code: Any, message_id: str) -> Any:
        record, detail = code
        if record == "Delivery":  # https://postmarkapp.com/developer/webhooks/delivery-webhook
            return {
                "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound", "MessageID": message_id,
                "Recipient": "john@example.com", "Tag": "welcome-email", "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
                "Details": "Test delivery webhook details", "Metadata": {"a_key": "a_value"},
            }
        if record == "Bounce":  # https://postmarkapp.com/developer/webhooks/bounce-webhook
            return {
                "RecordType": "Bounce", "ID": uuid.uuid4().int % 10**10, "Type": "HardBounce", "TypeCode": detail,
                "Name": "Hard bounce", "Tag": "Test", "MessageID": message_id, "ServerID": 23,
                "MessageStream": "outbound", "Description": "The server was unable to deliver your message.",
                "Details": "Test bounce details", "Email": "john@example.com", "From": "sender@example.com",
                "BouncedAt": "2019-11-05T16:33:54.9070259Z", "DumpAvailable": True, "Inactive": True,
                "CanActivate": True, "Subject": "Test subject", "Content": "<Full dump of bounce>",
            }
        if record == "SpamComplaint":  # https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
            return {
                "RecordType": "SpamComplaint", "ID": uuid.uuid4().int % 10**10, "Type": "SpamComplaint",
                "TypeCode": 512, "Name": "Spam complaint", "Tag": "Test", "MessageID": message_id,
                "ServerID": 23, "MessageStream": "outbound", "Description": "", "Details": "Test spam complaint details",
                "Email": "john@example.com", "From": "sender@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
                "DumpAvailable": True, "Inactive": True, "CanActivate": False, "Subject": "Test subject",
            }
        if record == "Open":  # https://postmarkapp.com/developer/webhooks/open-tracking-webhook
            return {
                "RecordType": "Open", "MessageStream": "outbound", "FirstOpen": True,
                "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
                "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
                "Platform": "WebMail", "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5)",
                "ReadSeconds": 5, "Geo": {}, "MessageID": message_id, "Metadata": {},
                "ReceivedAt": "2019-11-05T16:33:54.9070259Z", "Tag": "welcome-email", "Recipient": "john@example.com",
            }
        if record == "Click":  # https://postmarkapp.com/developer/webhooks/click-webhook
            return {
                "RecordType": "Click", "MessageStream": "outbound", "ClickLocation": "HTML",
                "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
                "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
                "Platform": "Desktop", "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5)",
                "OriginalLink": "https://example.com", "Geo": {}, "MessageID": message_id, "Metadata": {},
                "ReceivedAt": "2017-10-25T15:21:11.9065619Z", "Tag": "welcome-email", "Recipient": "john@example.com",
            }
        # https://postmarkapp.com/developer/webhooks/subscription-change-webhook
        return {
            "RecordType": "SubscriptionChange", "MessageID": message_id, "ServerID": 23,
            "MessageStream": "outbound", "ChangedAt": "2020-02-01T10:53:34.416071Z", "Recipient": "bounced-address@wildbit.com",
            "Origin": "Recipient", "SuppressSending": detail is not None, "SuppressionReason": detail,
            "Tag": "my-tag", "Metadata": {"example": "value"},
        }

    def sign(self, secrets: Any, document: Any, *, timestamp: float | None = None, wrong_key: bool = False) -> tuple[Headers, bytes]:
        password = "not-the-password" if wrong_key else secrets.postmark_password
        return {"Authorization": basic_auth(secrets.postmark_user, password)}, json.dumps(document).encode()

    def without_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {}, body

    def with_malformed_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {"AUTHORIZATION": "Basic !!not-base64!!"}, body


class TestSendgrid(ProviderContract):
    provider = "sendgrid"
    setting = "CHIMEWAY_SENDGRID_WEBHOOK_PUBLIC_KEY"
    unset = ("sendgrid_webhook_public_key",)
    tables = (sendgrid.EVENT_TYPES,)
    events_per_request = 2
    delivered = "delivered"
    hard_bounce = ("bounce", "bounce")
    soft_bounce = "deferred"
    complaint = "spamreport"
    unknown = "group_unsubscribe_preview"
    misshapen = [{"event": ["bounce"], "sg_message_id": "x.filter1", "timestamp": 1513299569}]
    expected = {
        "processed": ("queued", None),
        "deferred": ("deferred", None),
        "delivered": ("delivered", None),
        "bounce": ("bounced", "bounced"),
        ("bounce", "blocked"): ("bounced", "blocked"),
        "dropped": ("rejected", "invalid"),
        ("dropped", "Unsubscribed Address"): ("rejected", "unsubscribed"),
        ("dropped", "Bounced Address"): ("rejected", "bounced"),
        "open": ("opened", None),
        "click": ("clicked", None),
        "spamreport": ("complained", None),
        "unsubscribe": ("unsubscribed", None),
        "group_unsubscribe": ("unsubscribed", None),
        "group_resubscribe": ("subscribed", None),
    }

    def stored_message_id(self, message_id: str) -> str:
        return f"X{message_id}"  # the X-Message-Id header SendGrid answered at send time

    def document(self, code: Any, message_id: str) -> Any:
        event, detail = code if isinstance(code, tuple) else (code, None)
        # https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event (examples)
        item = {
            "email": "example@test.com",
            "timestamp": 1513299569,
            "smtp-id": f"<{self.stored_message_id(message_id)}@ismtpd-555>",
            "event": event,
            "category": "cat facts",
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{self.stored_message_id(message_id)}.filter0001.16648.5515E0B88.0",
        }
        if event == "bounce":
            item.update(reason="500 unknown recipient", status="5.0.0", type=detail or "bounce", bounce_classification="Invalid Address")
        elif event == "dropped":
            item.update(reason=detail or "Invalid", status="5.0.0")
        elif event == "deferred":
            item.update(response="400 try again later", attempt="5")
        elif event == "delivered":
            item.update(response="250 OK")
        elif event in ("open", "click"):
            item.update(useragent="Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)", ip="255.255.255.255")
            if event == "click":
                item.update(url="http://www.sendgrid.com/")
        elif event.startswith("group_"):
            item.update(asm_group_id=10)
        # A batch: SendGrid posts arrays; a second, unrelated event rides along.
        other_id = f"Z{uuid.uuid4().hex[:10]}"
        other = dict(item, sg_event_id=uuid.uuid4().hex, event="processed", sg_message_id=f"{other_id}.filter1.1.1.0")
        other["smtp-id"] = f"<{other_id}@ismtpd-555>"
        return [item, other]

    def event_for(self, message_id: str) -> Event:
        return Event.get(Event.provider_message_id == self.stored_message_id(message_id))

    def sign(self, secrets: Any, document: Any, *, timestamp: float | None = None, wrong_key: bool = False) -> tuple[Headers, bytes]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        body = json.dumps(document).encode()
        stamp = str(int(time.time() if timestamp is None else timestamp))
        key = ec.generate_private_key(ec.SECP256R1()) if wrong_key else secrets.sendgrid_private_key
        signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        return {sendgrid.SIGNATURE_HEADER.title(): signature, sendgrid.TIMESTAMP_HEADER.title(): stamp}, body

    def resign(self, secrets: Any, headers: Headers, body: bytes) -> Headers:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        stamp = str(int(time.time()))
        signature = secrets.sendgrid_private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {sendgrid.SIGNATURE_HEADER: base64.b64encode(signature).decode(), sendgrid.TIMESTAMP_HEADER: stamp}

    def without_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {k: v for k, v in headers.items() if k.lower() != sendgrid.SIGNATURE_HEADER}, body

    def with_malformed_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {**self.without_signature(headers, body)[0], sendgrid.SIGNATURE_HEADER: "%%% not base64"}, body

    def tampered(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return headers, body.replace(b'"delivered"', b'"bounce"')


class TestMailgun(ProviderContract):
    provider = "mailgun"
    setting = "CHIMEWAY_MAILGUN_WEBHOOK_SIGNING_KEY"
    unset = ("mailgun_webhook_signing_key",)
    tables = (mailgun.EVENT_TYPES,)
    delivered = "delivered"
    hard_bounce = ("failed", "permanent", "bounce")
    soft_bounce = ("failed", "temporary", "generic")
    complaint = "complained"
    unknown = "stored"
    misshapen = {"event-data": {"event": "delivered", "timestamp": 1521472262.9, "message": "not an object"}}
    expected = {
        "accepted": ("queued", None),
        "rejected": ("rejected", "other"),
        "delivered": ("delivered", None),
        "failed": ("bounced", "bounced"),
        ("failed", "permanent", "suppress-bounce"): ("bounced", "bounced"),
        ("failed", "permanent", "suppress-complaint"): ("bounced", "spam"),
        ("failed", "temporary", "generic"): ("deferred", "other"),
        "opened": ("opened", None),
        "clicked": ("clicked", None),
        "unsubscribed": ("unsubscribed", None),
        "complained": ("complained", None),
    }

    def stored_message_id(self, message_id: str) -> str:
        return f"<{message_id}@example.org>"  # as Mailgun's send API answered it

    def document(self, code: Any, message_id: str) -> Any:
        if code == "failed":
            code = ("failed", "permanent", "bounce")
        event, severity, reason = code if isinstance(code, tuple) else (code, None, None)
        # https://documentation.mailgun.com/docs/mailgun/user-manual/events/webhooks (sample payloads)
        data = {
            "event": event,
            "id": "CPgfbmQMTCKtHW6uIWtuVe",
            "timestamp": 1521472262.908181,
            "log-level": "info",
            "recipient": "alice@example.com",
            "recipient-domain": "example.com",
            "tags": ["my_tag_1"],
            "envelope": {"transport": "smtp", "sender": "bob@example.org", "targets": "alice@example.com"},
            "message": {"headers": {"to": "Alice <alice@example.com>", "message-id": f"{message_id}@example.org",
                                    "from": "Bob <bob@example.org>", "subject": "Test event"},
                        "attachments": [], "size": 111},
            "user-variables": {"my_var_1": "Mailgun Variable #1"},
            "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        }
        if severity:
            data.update(severity=severity, reason=reason, **{"log-level": "error"})
            data["delivery-status"] = {"attempt-no": 1, "code": 550, "description": "", "message": "No such user"}
        if event == "rejected":
            data["reject"] = {"reason": "Sandbox subdomains are for test purposes only.", "description": ""}
        return {"event-data": data}

    def sign(self, secrets: Any, document: Any, *, timestamp: float | None = None, wrong_key: bool = False) -> tuple[Headers, bytes]:
        stamp = str(int(time.time() if timestamp is None else timestamp))
        token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
        key = "not-the-key" if wrong_key else secrets.mailgun_key
        signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
        signed = {"signature": {"timestamp": stamp, "token": token, "signature": signature}, **document}
        return {"Content-Type": "application/json"}, json.dumps(signed).encode()

    def without_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        document = json.loads(body)
        del document["signature"]
        return headers, json.dumps(document).encode()

    def with_malformed_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        document = json.loads(body)
        document["signature"]["signature"] = "zz-not-hex"
        return headers, json.dumps(document).encode()

    def tampered(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        # The signature covers timestamp + token (not the event): tamper with what it covers.
        document = json.loads(body)
        document["signature"]["token"] = uuid.uuid4().hex
        return headers, json.dumps(document).encode()

    def test_a_signature_reused_with_another_event_is_a_replay_and_changes_nothing(self, webhooks, secrets, counts) -> None:
        headers, body = self.sign(secrets, self.document("delivered", self.message_id()))
        forged = json.loads(body)
        forged["event-data"] = self.document("complained", self.message_id())["event-data"]
        assert handle(self.provider, headers, body) == (200, "ok")
        assert handle(self.provider, headers, json.dumps(forged).encode()) == (200, "duplicate")
        assert counts() == {"webhook_events": 1, "events": 1, "suppressions": 0}
        assert [e.type for e in Event.select()] == ["delivered"]


class TestStandardWebhooks(ProviderContract):
    provider = "standard"
    setting = "CHIMEWAY_STANDARD_WEBHOOK_SECRET"
    unset = ("standard_webhook_secret",)
    tables = (standard.EVENT_TYPES,)
    delivered = "email.delivered"
    hard_bounce = "email.bounced"
    soft_bounce = ("email.bounced", "Transient")
    complaint = "email.complained"
    unknown = "email.received_by_robot"
    misshapen = {"type": "email.delivered", "created_at": "2024-02-22T23:41:12Z", "data": {"email_id": ["a", "b"]}}
    expected = {
        "email.scheduled": ("queued", None),
        "email.sent": ("sent", None),
        "email.delivered": ("delivered", None),
        "email.delivery_delayed": ("deferred", None),
        "email.bounced": ("bounced", "bounced"),
        ("email.bounced", "Undetermined"): ("bounced", "other"),
        ("email.bounced", "Transient"): ("deferred", "other"),
        "email.complained": ("complained", "spam"),
        "email.opened": ("opened", None),
        "email.clicked": ("clicked", None),
        "email.failed": ("failed", None),
        # Chimeway's own vocabulary, for any sender that signs with Standard Webhooks:
        "queued": ("queued", None),
        "sent": ("sent", None),
        "rejected": ("rejected", None),
        "failed": ("failed", None),
        "bounced": ("bounced", "bounced"),
        "deferred": ("deferred", None),
        "delivered": ("delivered", None),
        "autoresponded": ("autoresponded", None),
        "opened": ("opened", None),
        "clicked": ("clicked", None),
        "complained": ("complained", "spam"),
        "unsubscribed": ("unsubscribed", None),
        "subscribed": ("subscribed", None),
    }

    def document(self, code: Any, message_id: str) -> Any:
        kind, bounce = code if isinstance(code, tuple) else (code, "Permanent")
        # https://resend.com/docs/dashboard/webhooks/event-types (Resend signs through Svix)
        data = {
            "created_at": "2024-02-22T23:41:11.894719+00:00",
            "email_id": message_id,
            "from": "Acme <onboarding@resend.dev>",
            "to": ["delivered@resend.dev"],
            "subject": "Sending this example",
        }
        if "bounced" in kind:
            data["bounce"] = {"message": "The recipient's email provider sent a hard bounce message.",
                              "subType": "Suppressed", "type": bounce}
        return {"type": kind, "created_at": "2024-02-22T23:41:12.126Z", "data": data}

    def sign(self, secrets: Any, document: Any, *, timestamp: float | None = None, wrong_key: bool = False) -> tuple[Headers, bytes]:

        body = json.dumps(document).encode()
        return self._headers(secrets, body, timestamp, wrong_key), body

    def _headers(self, secrets: Any, body: bytes, timestamp: float | None = None, wrong_key: bool = False) -> Headers:
        from standardwebhooks.webhooks import Webhook

        secret = "whsec_" + base64.b64encode(b"another secret entirely").decode() if wrong_key else secrets.standard_secret
        msg_id = f"msg_{uuid.uuid4().hex}"
        when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
        signature = Webhook(secret).sign(msg_id, when, body.decode())
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}

    def resign(self, secrets: Any, headers: Headers, body: bytes) -> Headers:
        return self._headers(secrets, body)

    def without_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {k: v for k, v in headers.items() if k != "webhook-signature"}, body

    def with_malformed_signature(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return {**headers, "webhook-signature": "v1-without-a-comma"}, body

    def tampered(self, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
        return headers, body.replace(b"email.delivered", b"email.bounced")

    def test_svix_header_names_are_accepted(self, webhooks, secrets) -> None:
        mid = self.message_id()
        headers, body = self.sign(secrets, self.document(self.delivered, mid))
        svix = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
        assert handle(self.provider, svix, body) == (200, "ok")
        assert self.event_for(mid).type == "delivered"


def test_an_unknown_provider_is_a_404_and_stores_nothing(webhooks, counts) -> None:
    assert handle("carrier-pigeon", {}, b"{}") == (404, "unknown provider")
    assert counts() == {"webhook_events": 0, "events": 0, "suppressions": 0}


def test_a_database_failure_answers_503_so_the_provider_retries(pg_url, secrets) -> None:
    broken = pg_url.rsplit("/", 1)[0] + "/chimeway_no_such_database"
    runtime_mod.configure(database_url=broken, redis_url="", environ={}, **secrets.settings())
    try:
        headers = {"Authorization": basic_auth(secrets.postmark_user, secrets.postmark_password)}
        body = json.dumps(TestPostmark().document(("Delivery", None), "m-1")).encode()
        assert handle("postmark", headers, body) == (503, "temporarily unavailable")
    finally:
        runtime_mod.reset()


def test_headers_are_matched_whatever_their_case(webhooks, secrets) -> None:
    body = json.dumps(TestPostmark().document(("Delivery", None), "m-case")).encode()
    credentials = basic_auth(secrets.postmark_user, secrets.postmark_password)
    assert handle("postmark", [("aUtHoRiZaTiOn", credentials)], body) == (200, "ok")
    assert WebhookEvent.select().count() == 1


def test_an_unusable_secret_answers_500_naming_the_setting(webhooks_with, secrets) -> None:
    webhooks_with(sendgrid_webhook_public_key="bm90IGEga2V5", standard_webhook_secret="whsec_@@not base64@@")
    sendgrid_request = TestSendgrid().sign(secrets, TestSendgrid().document("delivered", "m-1"))
    standard_request = TestStandardWebhooks().sign(secrets, TestStandardWebhooks().document("email.sent", "m-2"))
    status, text = handle("sendgrid", *sendgrid_request)
    assert status == 500 and "CHIMEWAY_SENDGRID_WEBHOOK_PUBLIC_KEY" in text
    status, text = handle("standard", *standard_request)
    assert status == 500 and "CHIMEWAY_STANDARD_WEBHOOK_SECRET" in text
