"""What send() stores, checked without a database: the strict JSON encoding, the fingerprint, the errors."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

import chimeway
from chimeway import db
from chimeway.errors import ChimewayError
from chimeway.store.deliveries import fingerprint


def test_the_send_errors_are_value_errors_under_the_root_and_exported():
    assert issubclass(chimeway.InvalidSendError, ChimewayError) and issubclass(chimeway.InvalidSendError, ValueError)
    assert issubclass(chimeway.IdempotencyConflictError, chimeway.InvalidSendError)
    conflict = chimeway.IdempotencyConflictError("order-7", ["payload"])
    assert (conflict.argument, conflict.key, conflict.differing) == ("idempotency_key", "order-7", ["payload"])
    assert str(conflict) == "idempotency_key: key 'order-7' was first used for a send with a different payload"


def test_given_a_json_object_then_the_strict_encoding_is_the_stored_encoding():
    value = {"b": [1, 2.5, None, True], "a": {"z": "caf\u00e9 \U0001f600", "y": "\\u0000 is text"}}
    assert db.to_db_json_strict(value) == db.to_db_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"x": object()}, TypeError),
        ({"x": math.nan}, ValueError),
        ({"x": [math.inf]}, ValueError),
        ({"x": "a\x00"}, ValueError),
        ({"a\x00": 1}, ValueError),
        ({"x": ["\ud83d"]}, ValueError),  # half of a surrogate pair, alone
    ],
)
def test_given_what_json_or_postgresql_cannot_hold_then_the_strict_encoding_raises(value, error):
    with pytest.raises(error):
        db.to_db_json_strict(value)


def test_the_fingerprint_is_the_sha256_of_the_parameters_as_sorted_key_json():
    payload = {"subject": "hi", "lines": [1, 2.5], "caf\u00e9": None}
    params = {"tenant_id": "acme", "channel": "email", "recipient": "ann@example.com", "adapter": "smtp",
              "notification_id": "7b0b6c52-3f0e-4c39-9d2b-1f0d4f1c2a11"}
    canonical = json.dumps({**params, "payload": payload}, sort_keys=True, separators=(",", ":"))
    assert fingerprint(**params, payload_json=db.to_db_json_strict(payload)) == hashlib.sha256(canonical.encode()).hexdigest()
    changed = {**params, "recipient": "bob@example.com"}
    assert fingerprint(**changed, payload_json=db.to_db_json_strict(payload)) != fingerprint(
        **params, payload_json=db.to_db_json_strict(payload)
    )
