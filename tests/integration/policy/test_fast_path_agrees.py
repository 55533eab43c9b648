"""The policy's fast path (``policy.FACTS_SQL`` and ``policy.PROCEEDS_BY_FACTS_SQL``, which the
load-and-claim statement runs on PostgreSQL) and the rules in Python give the same answer: for every
built-in rule's decisions, the SQL says "proceed" only where the rules proceed, and the facts it loads
lead the rules to the decision they reach by querying."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

import pytest

from chimeway import db, policy, preferences, suppressions
from chimeway.models import Delivery
from chimeway.states import Reason
from chimeway.store import deliveries

PROCEED = policy.Proceed()


def _quiet_now() -> dict:
    now = db.now().astimezone(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return {"metadata": {"quiet_hours": f"{start:%H:%M}-{end:%H:%M}", "timezone": "UTC"}}


def _read_elsewhere(notification_id: str) -> None:
    Delivery.create(notification_id=notification_id, channel="sms", recipient="+15555550100", adapter="fake")
    deliveries.mark_read(notification_id)


#: rule exercised → (delivery fields, setup given the notification id, the rules' decision, the SQL's
#: "proceed" answer). False from the SQL means "ask the rules", so only a Proceed may be fast.
CASES = {
    "clean": ({}, None, PROCEED, True),
    "suppression_list: suppressed": ({}, lambda n: suppressions.add("bob@example.com", "email"),
                                     policy.Suppress(Reason.RECIPIENT_SUPPRESSED), False),
    "suppression_list: entry expired": ({}, lambda n: suppressions.add(
        "bob@example.com", "email", expires_at=db.now() - timedelta(minutes=1)), PROCEED, True),
    "suppression_list: not normalized": ({"recipient": "Bob@Example.com"},
                                         lambda n: suppressions.add("bob@example.com", "email"),
                                         policy.Suppress(Reason.RECIPIENT_SUPPRESSED), False),
    "preferences: channel off": ({}, lambda n: preferences.set("bob@example.com", "email", False),
                                 policy.Suppress(Reason.CHANNEL_DISABLED), False),
    "preferences: category off": ({"category": "news"},
                                  lambda n: preferences.set("bob@example.com", "email", False, category="news"),
                                  policy.Suppress(Reason.CHANNEL_DISABLED), False),
    "preferences: category on, channel off": ({"category": "news"}, lambda n: (
        preferences.set("bob@example.com", "email", False),
        preferences.set("bob@example.com", "email", True, category="news")), PROCEED, True),
    "quiet_hours: its own window now": (_quiet_now, None, "defer", False),
    "delayed_fallback: read elsewhere": ({"delay_fallback": True}, _read_elsewhere,
                                         policy.Suppress(Reason.ALREADY_READ), False),
    "delayed_fallback: not read": ({"delay_fallback": True}, None, PROCEED, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_given_each_rules_decision_then_the_sql_fast_path_and_the_rules_agree(case, make_delivery, dialect) -> None:
    if dialect == "sqlite":
        pytest.skip("the fast path is PostgreSQL's (load-and-claim); SQLite always runs the rules")
    fields, setup, expected, fast = CASES[case]
    notification_id = str(uuid.uuid4())
    if setup is not None:
        setup(notification_id)
    made = make_delivery(notification_id=notification_id, **(fields() if callable(fields) else fields))
    assert policy.decided_by_facts()
    now = db.now()
    # When the rules decide by querying, and again from the facts the load statement read
    queried = policy.evaluate(Delivery.get_by_id(made.id), now)
    from_facts = policy.evaluate(deliveries.load(made.id, now), now)
    # and the SQL fast path answers for the same row
    (sql_proceeds,) = db.execute(
        f"SELECT {policy.PROCEEDS_BY_FACTS_SQL} FROM (SELECT d.*, {policy.FACTS_SQL} "
        "FROM chimeway_deliveries d WHERE d.id = %s) x",
        (db.to_db_time(now), made.id),
    ).fetchone()
    # Then all three agree with the rule's decision
    if expected == "defer":
        assert isinstance(queried, policy.Defer)
    else:
        assert queried == expected
    assert from_facts == queried
    assert sql_proceeds is fast
    assert not sql_proceeds or queried == PROCEED
