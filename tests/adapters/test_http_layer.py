"""The shared HTTP layer's own rules: Retry-After parsing and option parsers."""

from __future__ import annotations

import email.utils

import pytest
from chimeway_adapters._http import parse_retry_after, positive_seconds

NOW = 1_800_000_000.0  # a fixed clock


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: no wait, never negative
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
    ],
)
def test_given_a_retry_after_header_then_it_becomes_seconds_to_wait(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("header", [None, "", "   ", "-5", "soon", "1.5e3", "Someday, 99 Foo 20XX"])
def test_given_a_missing_or_unreadable_retry_after_then_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


@pytest.mark.parametrize("value", ["0", "-1", "abc", True, ""])
def test_given_a_timeout_that_is_not_a_positive_number_then_it_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        positive_seconds(value)


def test_given_a_positive_timeout_then_it_is_a_float() -> None:
    assert positive_seconds("2.5") == 2.5
