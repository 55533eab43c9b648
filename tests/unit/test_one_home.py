"""Rules with one home: a second spelling of the SQL that writes these tables fails here."""

from __future__ import annotations

from pathlib import Path

import chimeway

PACKAGE = Path(chimeway.__file__).parent


def _modules_containing(text: str) -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if text in path.read_text(encoding="utf-8")
    )


def test_every_ledger_event_insert_is_written_in_ledger_py() -> None:
    assert _modules_containing("INSERT INTO chimeway_events") == ["webhooks/ledger.py"]


def test_no_two_modules_of_the_package_share_a_name() -> None:
    # Two suppressions.py with different add() signatures read as one thing; each name says one thing.
    names = [path.name for path in PACKAGE.rglob("*.py") if path.name not in ("__init__.py", "__main__.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_outcome_names_one_thing() -> None:
    # The deliver actor's Outcome dataclass; the HTTP layer's (error class, words) pair is a Classification.
    http_layer = (PACKAGE / "http.py").read_text(encoding="utf-8")
    assert "Outcome = " not in http_layer and "Classification = " in http_layer
    import chimeway.adapter

    assert not hasattr(chimeway.adapter, "Outcome") and hasattr(chimeway.adapter, "Classification")


def test_policy_facts_is_declared_on_the_delivery_not_attached_ad_hoc() -> None:
    from chimeway.models import Delivery

    # Given a delivery built without the deliver actor's load, its facts are None (the rules query)
    assert "policy_facts" in Delivery.__annotations__ and Delivery().policy_facts is None
    # and the rules read the declared attribute, not getattr with a default
    assert _modules_containing('getattr(delivery, "policy_facts"') == []
