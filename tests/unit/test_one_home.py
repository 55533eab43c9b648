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
