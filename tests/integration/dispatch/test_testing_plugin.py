"""The pytest plugin that applications get from chimeway.testing: runtime, worker, drain, fake calls."""

from __future__ import annotations

import chimeway
from chimeway.testing import drain


def test_given_the_plugin_fixtures_when_an_application_sends_then_drain_runs_it_and_the_fake_calls_show_it(
    chimeway_runtime, chimeway_worker, chimeway_broker, chimeway_fake_calls
):
    assert chimeway_broker is chimeway_runtime.broker
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary", "ok"]}, adapter="fake")
    assert drain() == []
    assert [call.attempt_number for call in chimeway_fake_calls(sent.id)] == [1, 2]
    assert chimeway.get_delivery(sent.id).status == "succeeded"
