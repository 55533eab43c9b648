"""Which events suppress an address is one rule: ``reason_for`` in Python and ``suppressing_sql`` for the
set-based reconcile pipeline give the same answer for every event type and reject reason."""

from __future__ import annotations

from chimeway import db
from chimeway.states import EventType, RejectReason
from chimeway.webhooks.suppression_entries import reason_for, suppressing_sql


def test_given_every_event_type_and_reject_reason_then_sql_and_python_agree_on_suppressing(configured) -> None:
    cases = [(t.value, r) for t in EventType for r in [None, *(reason.value for reason in RejectReason)]]
    for event_type, reject_reason in cases:
        # When the database evaluates the SQL spelling of the rule on that event
        (in_sql,) = db.execute(
            f"SELECT CASE WHEN {suppressing_sql('e')} THEN 1 ELSE 0 END "
            "FROM (SELECT CAST(%s AS text) AS type, CAST(%s AS text) AS reject_reason) e",
            (event_type, reject_reason),
        ).fetchone()
        # Then it suppresses exactly when reason_for names a reason
        assert bool(in_sql) == (reason_for(event_type, reject_reason) is not None), (event_type, reject_reason)
