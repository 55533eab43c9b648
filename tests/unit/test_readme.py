"""The README stays true: every setting and every built-in adapter option is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from chimeway.wiring.config import describe
from chimeway.wiring.registry import discover

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_appears_in_the_configuration_table():
    missing = [variable for variable, _, _ in describe() if f"`{variable}`" not in README]
    assert missing == []


def test_every_built_in_adapter_and_its_options_appear_in_the_adapter_table():
    for name, entry_point in discover().items():
        if not entry_point.value.startswith("chimeway_adapters."):
            continue
        row = re.search(rf"^\| `{name}` \|.*$", README, re.MULTILINE)
        assert row, f"adapter {name} missing from the README"
        for option in entry_point.load().options:
            assert option in row.group(0), f"{name} option {option} missing from the README"


def test_the_readme_names_the_two_commands():
    assert "make demo" in README and "make test" in README
