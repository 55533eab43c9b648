"""Hostile and unstorable webhook bodies: always a 4xx, never a 500 or a 503, and nothing half-stored.

Each case is posted through ``handle()`` and through the WSGI application (the environ a server
builds), on SQLite and PostgreSQL. The development server's own defences (a negative
Content-Length, a slow client) are tested over real sockets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import time
import uuid
from typing import Any

import httpx
import pytest

from chimeway.models import Event, WebhookEvent
from chimeway.webhooks import handle
from chimeway.webhooks.providers import sendgrid
from chimeway.webhooks.wsgi import application
from tests.integration.webhooks import test_provider_contract as contract

NOTHING = {"webhook_events": 0, "events": 0, "suppressions": 0}


def via_wsgi(provider: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """POST through the WSGI application, as a server would call it."""
    environ: dict[str, Any] = {
        "PATH_INFO": f"/webhooks/{provider}", "REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ["CONTENT_TYPE" if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    statuses: list[str] = []
    chunks = application(environ, lambda status, _headers: statuses.append(status))
    return int(statuses[0].split()[0]), b"".join(chunks).decode().strip()


@pytest.fixture(params=["handle", "wsgi"])
def post(request: pytest.FixtureRequest, webhooks) -> Any:
    return handle if request.param == "handle" else via_wsgi


def postmark(secrets: Any, document: Any) -> tuple[dict[str, str], bytes]:
    return contract.TestPostmark().sign(secrets, document)


def postmark_delivery(message_id: str, **fields: Any) -> dict[str, Any]:
    return {**contract.TestPostmark().document(("Delivery", None), message_id), **fields}


def sendgrid_signed(secrets: Any, body: bytes, stamp: str) -> dict[str, str]:
    """Headers signing ``body`` with ``stamp`` exactly as SendGrid would (any stamp, even a bad one)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = secrets.sendgrid_private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {sendgrid.SIGNATURE_HEADER: base64.b64encode(signature).decode(), sendgrid.TIMESTAMP_HEADER: stamp}


def mailgun_signed(secrets: Any, event_data: dict[str, Any], stamp: str) -> tuple[dict[str, str], bytes]:
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(secrets.mailgun_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    document = {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event_data}
    return {"Content-Type": "application/json"}, json.dumps(document).encode()


# -- item 4: bad bodies ----------------------------------------------------------------------------


def test_given_a_deeply_nested_unsigned_body_when_posted_to_mailgun_then_400_and_nothing_stored(post, counts) -> None:
    # Mailgun's signature lives in the body, so it must be decoded first: before, a RecursionError (500).
    assert post("mailgun", {"Content-Type": "application/json"}, b"[" * 200_000) == (400, "body is not valid JSON")
    assert counts() == NOTHING


def test_given_a_deeply_nested_signed_body_when_posted_to_sendgrid_then_400_and_nothing_stored(post, secrets, counts) -> None:
    body = b"[" * 200_000
    assert post("sendgrid", sendgrid_signed(secrets, body, str(int(time.time()))), body) == (400, "body is not valid JSON")
    deep = json.dumps([json.loads("[" * 70 + "]" * 70)]).encode()  # valid JSON, but no provider nests 70 deep
    assert post("sendgrid", sendgrid_signed(secrets, deep, str(int(time.time()))), deep) == (400, "body is nested too deeply")
    assert counts() == NOTHING


def test_given_an_event_time_past_the_year_9999_in_utc_then_it_is_stored_with_the_time_received(post, secrets) -> None:
    # 9999-12-31T23:59:59-01:00 is 10000-01-01 in UTC: past datetime.max (before, an OverflowError: 500).
    document = postmark_delivery("pm-9999", DeliveredAt="9999-12-31T23:59:59-01:00")
    assert post("postmark", *postmark(secrets, document)) == (200, "ok")
    event = Event.get()
    assert event.occurred_at == event.received_at


@pytest.mark.parametrize(
    "message_id",
    ["\ud800", "pm-\x00-nul"],
    ids=["lone-surrogate", "nul"],
)
def test_given_a_message_id_the_ledger_cannot_store_then_400_and_the_raw_request_is_kept_as_failed(
    post, secrets, counts, message_id
) -> None:
    headers, body = postmark(secrets, postmark_delivery(message_id))
    assert b"\\u" in body  # the JSON escapes it: the request is valid JSON, the text inside is not storable
    assert post("postmark", headers, body) == (400, "event text contains NUL or an unpaired surrogate")
    assert counts() == {**NOTHING, "webhook_events": 1}
    raw = WebhookEvent.get()
    assert (raw.status, bytes(raw.body)) == ("failed", body)  # retrievable as it came
    # The provider's retry of the same request is a duplicate: it stops retrying a poisoned request.
    assert post("postmark", headers, body) == (200, "duplicate")
    assert counts() == {**NOTHING, "webhook_events": 1}


def test_given_a_nul_inside_an_unknown_events_raw_data_then_400_and_the_raw_request_is_kept(post, secrets, counts) -> None:
    # Before: PostgreSQL's jsonb refused \u0000 inside the kept raw event (a 503, retried forever).
    document = contract.TestSendgrid().document("group_unsubscribe_preview", "nul-raw")
    document[0]["useragent"] = "Mozilla\x00"
    body = json.dumps(document).encode()
    assert post("sendgrid", sendgrid_signed(secrets, body, str(int(time.time()))), body)[0] == 400
    assert counts() == {**NOTHING, "webhook_events": 1}
    assert WebhookEvent.get().status == "failed"


def test_given_nan_or_infinity_in_a_signed_body_then_400_and_nothing_stored(post, secrets, counts) -> None:
    # Python's json reads NaN, Infinity and 1e400 (as inf); neither database stores them as JSON.
    for literal in (b"NaN", b"-Infinity", b"1e400"):
        body = b'[{"event": "processed", "sg_message_id": "x.filter1", "timestamp": 1, "weight": ' + literal + b"}]"
        assert post("sendgrid", sendgrid_signed(secrets, body, str(int(time.time()))), body) == (400, "body is not valid JSON")
    assert counts() == NOTHING


def test_given_the_timestamp_nan_then_sendgrid_and_mailgun_refuse_the_signature(post, secrets, counts) -> None:
    # float("nan") compares false with everything: before, "nan" passed the +-300 s window.
    body = json.dumps(contract.TestSendgrid().document("delivered", "nan-ts")).encode()
    assert post("sendgrid", sendgrid_signed(secrets, body, "nan"), body) == (401, "unauthorized")
    event_data = contract.TestMailgun().document("delivered", "nan-ts")["event-data"]
    assert post("mailgun", *mailgun_signed(secrets, event_data, "nan")) == (401, "unauthorized")
    assert counts() == NOTHING


def test_given_a_lone_surrogate_in_the_mailgun_token_then_401_not_500(post, secrets, counts) -> None:
    headers, body = mailgun_signed(secrets, contract.TestMailgun().document("delivered", "t")["event-data"], str(int(time.time())))
    document = json.loads(body)
    document["signature"]["token"] = "\ud800"
    assert post("mailgun", headers, json.dumps(document).encode()) == (401, "unauthorized")
    assert counts() == NOTHING


def test_given_non_ascii_basic_auth_then_401_not_500(post, counts) -> None:
    body = json.dumps(postmark_delivery("pm-auth")).encode()
    assert post("postmark", {"Authorization": "Basic \u00e9t\u00e9"}, body) == (401, "unauthorized")
    assert counts() == NOTHING


def test_given_a_str_body_with_a_lone_surrogate_then_400_not_500(webhooks, secrets, counts) -> None:
    headers, _ = postmark(secrets, {})
    assert handle("postmark", headers, '{"MessageID": "\ud800"}') == (400, "body is not valid JSON")
    assert counts() == NOTHING


# -- the development server -------------------------------------------------------------------------


def raw_request(url: str, head: bytes, body: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=10)
    client.sendall(head + body)
    return client


def test_given_a_negative_content_length_then_the_server_answers_400_without_waiting_for_the_close(server, secrets, counts) -> None:
    headers, body = postmark(secrets, postmark_delivery("pm-neg"))
    head = (
        f"POST /webhooks/postmark HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n"
        "Content-Length: -1\r\n\r\n"
    ).encode()
    client = raw_request(server, head, body)  # the connection stays open: read(-1) would wait for its close
    try:
        reply = client.recv(4096)
    finally:
        client.close()
    assert reply.split(b"\r\n")[0].endswith(b"400 Bad Request")
    assert counts() == NOTHING


def test_given_a_slow_client_then_another_request_is_answered_meanwhile(server, secrets, make_delivery) -> None:
    slow = raw_request(server, b"POST /webhooks/postmark HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
    try:
        make_delivery("postmark", "pm-fast")
        headers, body = postmark(secrets, postmark_delivery("pm-fast"))
        with httpx.Client(timeout=10) as client:  # a safety net: single-threaded, this never returned
            response = client.post(f"{server}/webhooks/postmark", content=body, headers=headers)
        assert (response.status_code, response.text) == (200, "ok\n")
    finally:
        slow.close()


def test_given_a_client_that_stops_sending_then_the_server_drops_it_and_stores_nothing(webhooks, secrets, counts) -> None:
    import threading

    from chimeway.webhooks.wsgi import make

    httpd = make("127.0.0.1", 0, read_timeout=0.5)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        headers, body = postmark(secrets, postmark_delivery("pm-stalled"))
        head = (
            f"POST /webhooks/postmark HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        client = raw_request(f"http://127.0.0.1:{httpd.server_address[1]}", head, body[:10])
        try:
            reply = client.recv(4096)  # the server gives up on the body and answers
        finally:
            client.close()
        assert reply.split(b"\r\n")[0].endswith(b"408 Request Timeout")
        assert counts() == NOTHING
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
