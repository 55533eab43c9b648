"""Signed provider webhooks for the harnesses: Mailgun, signed exactly as Mailgun signs them.

Mailgun signs ``timestamp + token`` with HMAC-SHA256 and Chimeway uses the token as the request id,
so every event gets a fresh token; a replay re-sends the very same bytes. Mailgun's webhooks carry
the message id without angle brackets and Chimeway adds them, so a delivery whose provider message
id is ``<x@host>`` is matched by an event naming ``x@host``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass

PROVIDER = "mailgun"
SIGNING_KEY = "chimeway-harness-signing-key"
HEADERS = {"Content-Type": "application/json"}


def provider_message_id(tag: str) -> str:
    """What the fake adapter should store on the delivery so that this harness's events match it."""
    return f"<{tag}@harness.test>"


@dataclass(frozen=True)
class SignedEvent:
    body: bytes
    token: str
    forged: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return dict(HEADERS)


def mailgun_event(tag: str, event: str = "delivered", key: str = SIGNING_KEY, forged: bool = False) -> SignedEvent:
    """One Mailgun event about the message ``provider_message_id(tag)``; ``forged`` signs with a wrong key."""
    timestamp = str(int(time.time()))
    token = secrets.token_hex(25)
    signing_key = f"not-{key}" if forged else key
    signature = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    document = {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "id": uuid.uuid4().hex,
            "event": event,
            "timestamp": time.time(),
            "message": {"headers": {"message-id": f"{tag}@harness.test"}},
            "recipient": "someone@harness.test",
        },
    }
    return SignedEvent(json.dumps(document).encode(), token, forged)
