"""The deliver actor's load-and-claim (``deliveries.load_and_claim``): on PostgreSQL the statement that
loads a delivery also claims it when the loaded facts alone say the policy proceeds. It must claim
only deliveries the full policy would send now, and leave every other one to the policy."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from chimeway import db, policy, preferences, suppressions
from chimeway.models import Delivery
from chimeway.states import Orchestration, Status
from chimeway.store import deliveries

LEASE = 60


def _claimed(delivery_id: str) -> tuple[Delivery, int | None]:
    loaded, attempt = deliveries.load_and_claim(delivery_id, db.now(), lease_seconds=LEASE)
    assert loaded is not None
    return loaded, attempt


#: (how the delivery is made, what is set up first): every case the policy must look at itself.
NOT_CLAIMED = {
    "suppressed recipient": ({}, lambda: suppressions.add("bob@example.com", "email")),
    "channel disabled": ({}, lambda: preferences.set("bob@example.com", "email", False)),
    "category disabled": ({"category": "news"}, lambda: preferences.set("bob@example.com", "email", False, category="news")),
    "delayed fallback": ({"delay_fallback": True}, lambda: None),
    "quiet hours of its own": ({"metadata": {"quiet_hours": "00:00-23:59"}}, lambda: None),
    "upper-case email": ({"recipient": "Bob@Example.com"}, lambda: suppressions.add("bob@example.com", "email")),
    "padded address": ({"recipient": " bob@example.com"}, lambda: suppressions.add("bob@example.com", "email")),
    "non-ASCII address": ({"recipient": "bøb@example.com"}, lambda: None),
    "already succeeded": ({"status": Status.SUCCEEDED}, lambda: None),
    "budget spent": ({"status": Status.FAILED, "attempt_count": 5, "max_attempts": 5}, lambda: None),
    "retry not due": ({"status": Status.FAILED, "attempt_count": 1, "next_attempt_at": db.now() + timedelta(hours=1)}, lambda: None),
    "deferred": ({"orchestration_state": Orchestration.DEFERRED, "next_eligible_at": db.now() + timedelta(hours=1)}, lambda: None),
    "live lease": ({"status": Status.DISPATCHED, "attempt_count": 1, "lease_until": db.now() + timedelta(hours=1)}, lambda: None),
}


@pytest.mark.parametrize("case", sorted(NOT_CLAIMED))
def test_given_a_delivery_the_policy_must_judge_when_it_is_loaded_then_it_is_not_claimed(case, make_delivery, dialect):
    fields, setup = NOT_CLAIMED[case]
    setup()
    made = make_delivery(**fields)
    loaded, attempt = _claimed(made.id)
    assert attempt is None
    row = Delivery.get_by_id(made.id)
    assert (row.status, row.attempt_count) == (made.status, made.attempt_count)  # untouched
    assert loaded.status == made.status


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"channel": "sms", "recipient": "+15555550100"},
        {"category": "news", "metadata": {"timezone": "Europe/Paris"}},
        {"status": Status.FAILED, "attempt_count": 2, "next_attempt_at": db.now() - timedelta(seconds=5)},
        {"status": Status.DISPATCHED, "attempt_count": 1, "lease_until": db.now() - timedelta(seconds=5)},
    ],
    ids=["email", "sms", "category and timezone", "failed and due", "abandoned lease"],
)
def test_given_a_delivery_the_facts_clear_when_it_is_loaded_on_postgresql_then_it_is_claimed_as_the_policy_would(
    fields, make_delivery, dialect
):
    preferences.set("bob@example.com", "email", False, category="other")  # another category: no effect
    suppressions.add("bob@example.com", "sms")  # another channel: no effect
    made = make_delivery(**fields)
    now = db.now()
    assert policy.evaluate(deliveries.load(made.id, now), now) == policy.Proceed()
    loaded, attempt = _claimed(made.id)
    row = Delivery.get_by_id(made.id)
    if dialect == "sqlite":  # no statement can do both there: the actor claims after the policy
        assert attempt is None and row.status == made.status
        return
    assert attempt == made.attempt_count + 1
    assert (row.status, row.attempt_count) == (Status.DISPATCHED, attempt)
    assert row.lease_until > now + timedelta(seconds=LEASE - 5)
    assert loaded.status == made.status and loaded.attempt_count == made.attempt_count  # as it was loaded
    # A second message for it finds the live lease: no second claim.
    assert _claimed(made.id)[1] is None


def test_given_a_delivery_cap_quiet_hours_or_a_rule_of_ours_then_the_policy_is_not_decided_by_facts(reconfigure):
    assert policy.decided_by_facts()
    reconfigure(delivery_cap=(3, 60))
    assert not policy.decided_by_facts()
    reconfigure(quiet_hours=(time(22), time(7)))
    assert not policy.decided_by_facts()
    reconfigure()
    assert policy.decided_by_facts()
    policy.register(lambda delivery, now: policy.Proceed(), name="ours")
    assert not policy.decided_by_facts()
    policy.unregister("ours")
    assert policy.decided_by_facts()


def test_given_an_unknown_or_invalid_id_then_load_and_claim_finds_nothing(configured):
    assert deliveries.load_and_claim("not-a-uuid", db.now(), lease_seconds=LEASE) == (None, None)
    assert deliveries.load_and_claim("00000000-0000-4000-8000-000000000000", db.now(), lease_seconds=LEASE) == (None, None)
