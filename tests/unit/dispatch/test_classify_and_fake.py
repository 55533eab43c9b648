"""Classification of attempt results, and the fake adapter's script and call log."""

from __future__ import annotations

import json

import pytest
from chimeway_adapters.fake import FakeAdapter, FakeCrash

from chimeway.adapter import SendRequest, SendResult
from chimeway.dispatch.actors import classify
from chimeway.errors import BouncedError, DeliveryError, PermanentError, TemporaryError


def request(outcomes, attempt=1, **payload):
    return SendRequest(delivery_id="d-1", tenant_id="default", channel="email", recipient="ann@example.com",
                       payload={"fake_outcomes": outcomes, **payload}, metadata={}, attempt_number=attempt,
                       max_attempts=5)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (SendResult(provider="p", provider_message_id="m"), ("succeeded", None, "succeeded", None)),
        (TemporaryError("x"), ("failed", "temporary", "failed", None)),
        (PermanentError("x"), ("rejected", "permanent", "cancelled", "permanent_failure")),
        (BouncedError("x"), ("bounced", "bounced", "cancelled", "bounced")),
        (DeliveryError("x"), ("rejected", "unknown_classification", "failed", None)),
        (RuntimeError("x"), ("rejected", "unknown_classification", "failed", None)),
        ({"not": "a result"}, ("rejected", "unknown_classification", "failed", None)),
        (None, ("rejected", "unknown_classification", "failed", None)),
    ],
)
def test_given_an_adapter_result_then_it_is_classified_as_design_section_5_says(result, expected):
    outcome = classify(result)
    assert (outcome.outcome, outcome.error_class, outcome.status, outcome.reason) == expected


def test_given_a_script_then_each_attempt_follows_it_and_the_last_outcome_repeats():
    adapter = FakeAdapter()
    script = ["temporary", "ok"]
    with pytest.raises(TemporaryError):
        adapter.send(request(script, 1))
    assert adapter.send(request(script, 2)).provider == "fake"
    assert adapter.send(request(script, 7)).provider_message_id.startswith("fake-")


@pytest.mark.parametrize(("script", "raised"), [("permanent", PermanentError), ("bounced", BouncedError),
                                                ("crash", FakeCrash)])
def test_given_a_failing_script_then_the_matching_exception_is_raised(script, raised):
    with pytest.raises(raised):
        FakeAdapter().send(request([script]))


def test_given_garbage_then_the_adapter_returns_something_that_is_not_a_send_result():
    assert not isinstance(FakeAdapter().send(request(["garbage"])), SendResult)


def test_given_a_fake_provider_and_message_id_then_the_result_carries_them():
    result = FakeAdapter().send(request(["sleep:1"], fake_provider="postmark", fake_provider_message_id="pm-9"))
    assert (result.provider, result.provider_message_id) == ("postmark", "pm-9")


def test_given_a_call_log_file_then_each_call_appends_one_json_line_as_it_begins(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CHIMEWAY_FAKE_CALL_LOG", str(log))
    FakeAdapter.reset()
    with pytest.raises(FakeCrash):
        FakeAdapter().send(request(["crash"], attempt=2))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["delivery_id"] == "d-1" and lines[0]["attempt_number"] == 2
    assert lines[0]["idempotency_key"] == "chimeway-d-1" and isinstance(lines[0]["pid"], int)
    assert [call.outcome for call in FakeAdapter.calls_for("d-1")] == ["crash"]
