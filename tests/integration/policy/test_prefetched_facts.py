"""The deliver actor's one-query load (``deliveries.load``): the row as a select builds it, and the
suppression/preference facts the built-in rules then read instead of querying; they must agree with
the rules' own queries in every case."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chimeway import db, policy, preferences, suppressions
from chimeway.models import Delivery
from chimeway.states import Reason
from chimeway.store import deliveries


def _fields(delivery: Delivery) -> dict:
    return {name: getattr(delivery, name) for name in Delivery._meta.fields}


def test_given_a_delivery_then_find_and_load_build_what_a_peewee_select_builds(make_delivery):
    made = make_delivery(payload={"a": [1, 2]}, metadata={"k": "v"}, category="news", delay_fallback=True)
    selected = Delivery.get_by_id(made.id)
    now = db.now()
    for built in (deliveries.find(made.id), deliveries.find(made.id, made.tenant_id), deliveries.load(made.id, now)):
        assert _fields(built) == _fields(selected)
        assert built.is_terminal is False and built._dirty == set()
    assert deliveries.find(made.id, "another-tenant") is None
    assert deliveries.load("not-a-uuid", now) is None
    assert deliveries.load("00000000-0000-4000-8000-000000000000", now) is None


def _both(delivery_id: str, now):
    """The decision with the loaded facts and without them (the rules' own queries)."""
    loaded = deliveries.load(delivery_id, now)
    plain = deliveries.find(delivery_id)
    return policy.evaluate(loaded, now), policy.evaluate(plain, now), loaded.policy_facts


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda: None, policy.Proceed()),
        (lambda: suppressions.add("bob@example.com", "email"), policy.Suppress(Reason.RECIPIENT_SUPPRESSED)),
        (lambda: suppressions.add("bob@example.com", "sms"), policy.Proceed()),
        (lambda: suppressions.add("bob@example.com", "email", tenant_id="other"), policy.Proceed()),
        (
            lambda: suppressions.add("bob@example.com", "email", expires_at=db.now() - timedelta(seconds=5)),
            policy.Proceed(),
        ),
        (
            lambda: suppressions.add("bob@example.com", "email", expires_at=db.now() + timedelta(hours=1)),
            policy.Suppress(Reason.RECIPIENT_SUPPRESSED),
        ),
        (lambda: preferences.set("bob@example.com", "email", False), policy.Suppress(Reason.CHANNEL_DISABLED)),
        (
            lambda: preferences.set("bob@example.com", "email", False, category="news"),
            policy.Suppress(Reason.CHANNEL_DISABLED),
        ),
        (lambda: preferences.set("bob@example.com", "email", False, category="other"), policy.Proceed()),
        (
            lambda: (
                preferences.set("bob@example.com", "email", False),
                preferences.set("bob@example.com", "email", True, category="news"),
            ),
            policy.Proceed(),
        ),
        (
            lambda: (
                preferences.set("bob@example.com", "email", True),
                preferences.set("bob@example.com", "email", False, category="news"),
            ),
            policy.Suppress(Reason.CHANNEL_DISABLED),
        ),
        (lambda: preferences.set("bob@example.com", "sms", False), policy.Proceed()),
    ],
)
def test_given_suppressions_and_preferences_then_the_loaded_facts_decide_as_the_queries_do(
    make_delivery, setup, expected
):
    setup()
    made = make_delivery(category="news")
    with_facts, without, facts = _both(made.id, db.now())
    assert facts is not None
    assert with_facts == without == expected


def test_given_no_category_then_only_the_star_preference_counts(make_delivery):
    preferences.set("bob@example.com", "email", False, category="news")
    made = make_delivery(category=None)
    assert _both(made.id, db.now())[:2] == (policy.Proceed(), policy.Proceed())
    preferences.set("bob@example.com", "email", False)
    assert _both(made.id, db.now())[:2] == (policy.Suppress(Reason.CHANNEL_DISABLED),) * 2


def test_given_a_recipient_stored_unnormalized_then_no_facts_are_kept_and_the_rules_query(make_delivery):
    suppressions.add("bob@example.com", "email")
    made = make_delivery(recipient=" Bob@Example.com")
    with_facts, without, facts = _both(made.id, db.now())
    assert facts is None
    assert with_facts == without == policy.Suppress(Reason.RECIPIENT_SUPPRESSED)


def test_given_facts_for_another_instant_then_the_rules_query_instead(make_delivery):
    made = make_delivery()
    loaded = deliveries.load(made.id, db.now() - timedelta(hours=1))
    suppressions.add("bob@example.com", "email")  # after the load: a rule evaluated now must see it
    assert policy.evaluate(loaded, db.now()) == policy.Suppress(Reason.RECIPIENT_SUPPRESSED)
