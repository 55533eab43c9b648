"""The WSGI application behind a real HTTP server (wsgiref on 127.0.0.1, a free port, in a thread)."""

from __future__ import annotations

import base64
import json

import httpx

from chimeway.models import Event


def delivered(message_id: str) -> bytes:
    return json.dumps({"RecordType": "Delivery", "MessageID": message_id, "Recipient": "john@example.com",
                       "DeliveredAt": "2019-11-05T16:33:54.9070259Z"}).encode()


def auth(secrets, password: str | None = None) -> dict[str, str]:
    pair = f"{secrets.postmark_user}:{password or secrets.postmark_password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode(), "Content-Type": "application/json"}


def test_a_signed_post_is_answered_200_and_stored(server, secrets, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-http")
    with httpx.Client() as client:
        response = client.post(f"{server}/webhooks/postmark", content=delivered("pm-http"), headers=auth(secrets))
    assert (response.status_code, response.text) == (200, "ok\n")
    assert Event.get().delivery_id == delivery.id


def test_wrong_credentials_are_answered_401_without_echoing_anything(server, secrets) -> None:
    with httpx.Client() as client:
        response = client.post(f"{server}/webhooks/postmark", content=delivered("pm-x"), headers=auth(secrets, "nope"))
    assert (response.status_code, response.text) == (401, "unauthorized\n")
    assert Event.select().count() == 0


def test_the_tenant_comes_from_the_path(server, secrets) -> None:
    with httpx.Client() as client:
        response = client.post(f"{server}/webhooks/acme/postmark", content=delivered("pm-t"), headers=auth(secrets))
    assert response.status_code == 200
    assert Event.get().tenant_id == "acme"


def test_other_paths_methods_and_oversized_bodies_are_refused(server, secrets, webhooks) -> None:
    too_big = b"x" * (webhooks.settings.webhook_max_bytes + 1)
    with httpx.Client() as client:
        assert client.post(f"{server}/hooks/postmark", content=b"{}").status_code == 404
        assert client.post(f"{server}/webhooks/nobody", content=b"{}").status_code == 404
        assert client.get(f"{server}/webhooks/postmark").status_code == 405
        assert client.post(f"{server}/webhooks/postmark", content=too_big, headers=auth(secrets)).status_code == 413


def test_a_chunked_body_is_read_up_to_the_limit_when_the_server_terminates_the_input(webhooks, secrets) -> None:
    import io

    from chimeway.webhooks.wsgi import application

    def call(body: bytes) -> str:
        statuses: list[str] = []
        environ = {
            "PATH_INFO": "/webhooks/postmark", "REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True, "HTTP_AUTHORIZATION": auth(secrets)["Authorization"],
        }
        application(environ, lambda status, headers: statuses.append(status))
        return statuses[0]

    assert call(delivered("pm-chunked")) == "200 OK"
    assert call(b" " * (webhooks.settings.webhook_max_bytes + 1)) == "413 Request Entity Too Large"
