"""Quiet-hours arithmetic on the local wall clock: across midnight and across DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from chimeway.policy import quiet_hours_end

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
NIGHT = (time(22, 0), time(7, 0))


def test_outside_the_window_there_is_nothing_to_wait_for() -> None:
    # Given 22:00-07:00 and a local noon, When asked for the end, Then there is none
    assert quiet_hours_end(NIGHT, NEW_YORK, datetime(2026, 6, 1, 12, 0, tzinfo=NEW_YORK)) is None


def test_the_window_end_is_exclusive_and_its_start_inclusive() -> None:
    assert quiet_hours_end(NIGHT, UTC, datetime(2026, 6, 1, 7, 0, tzinfo=UTC)) is None
    assert quiet_hours_end(NIGHT, UTC, datetime(2026, 6, 1, 22, 0, tzinfo=UTC)) == datetime(
        2026, 6, 2, 7, tzinfo=UTC
    )


def test_an_evening_inside_a_window_that_crosses_midnight_ends_tomorrow_morning() -> None:
    now = datetime(2026, 6, 1, 23, 30, tzinfo=NEW_YORK)
    assert quiet_hours_end(NIGHT, NEW_YORK, now) == datetime(2026, 6, 2, 7, 0, tzinfo=NEW_YORK)


def test_an_early_morning_inside_a_window_that_crosses_midnight_ends_the_same_morning() -> None:
    now = datetime(2026, 6, 2, 3, 15, tzinfo=NEW_YORK)
    assert quiet_hours_end(NIGHT, NEW_YORK, now) == datetime(2026, 6, 2, 7, 0, tzinfo=NEW_YORK)


def test_a_daytime_window_ends_the_same_day() -> None:
    window = (time(12, 0), time(14, 0))
    now = datetime(2026, 6, 2, 12, 30, tzinfo=LONDON)
    assert quiet_hours_end(window, LONDON, now) == datetime(2026, 6, 2, 13, 0, tzinfo=UTC)


def test_the_night_clocks_spring_forward_in_new_york_the_window_ends_at_seven_daylight_time() -> None:
    # Given 2026-03-08, when 02:00 EST jumps to 03:00 EDT: 8 wall hours are only 7 real hours
    now = datetime(2026, 3, 7, 23, 0, tzinfo=NEW_YORK)
    end = quiet_hours_end(NIGHT, NEW_YORK, now)
    assert end == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # 07:00 EDT (UTC-4)
    assert end - now.astimezone(UTC) == (
        datetime(2026, 3, 8, 11, tzinfo=UTC) - datetime(2026, 3, 8, 4, tzinfo=UTC)
    )


def test_the_night_clocks_fall_back_in_new_york_the_window_ends_at_seven_standard_time() -> None:
    # Given 2026-11-01, when 02:00 EDT goes back to 01:00 EST: the night is 9 real hours long
    now = datetime(2026, 10, 31, 22, 0, tzinfo=NEW_YORK)
    end = quiet_hours_end(NIGHT, NEW_YORK, now)
    assert end == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # 07:00 EST (UTC-5)
    assert (end - now.astimezone(UTC)).total_seconds() == 10 * 3600


def test_the_night_clocks_spring_forward_in_london_the_window_ends_at_seven_summer_time() -> None:
    now = datetime(2026, 3, 28, 23, 30, tzinfo=LONDON)  # 01:00 GMT → 02:00 BST on 2026-03-29
    assert quiet_hours_end(NIGHT, LONDON, now) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_the_night_clocks_fall_back_in_london_the_window_ends_at_seven_greenwich_time() -> None:
    now = datetime(2026, 10, 24, 23, 30, tzinfo=LONDON)  # 02:00 BST → 01:00 GMT on 2026-10-25
    assert quiet_hours_end(NIGHT, LONDON, now) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_a_window_end_skipped_by_the_spring_jump_ends_at_the_jump() -> None:
    # Given a window ending at 02:30, a wall time that never happens on 2026-03-08 in New York,
    # When it is 01:50 EST, Then the window ends when the clock jumps (07:00 UTC), not an hour late
    window = (time(1, 0), time(2, 30))
    now = datetime(2026, 3, 8, 1, 50, tzinfo=NEW_YORK)
    assert quiet_hours_end(window, NEW_YORK, now) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now_utc", "expected_utc"),
    [
        (datetime(2026, 11, 1, 5, 10, tzinfo=UTC), datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),  # 01:10 EDT
        (datetime(2026, 11, 1, 6, 10, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),  # 01:10 EST
    ],
)
def test_a_window_end_repeated_by_the_fall_back_ends_at_the_next_reading_of_it(
    now_utc: datetime, expected_utc: datetime
) -> None:
    # Given 00:00-01:30 on the night 01:00-02:00 happens twice, When the clock reads 01:10 (either
    # time), Then the window ends the next time the clock reads 01:30, never in the past
    window = (time(0, 0), time(1, 30))
    assert quiet_hours_end(window, NEW_YORK, now_utc) == expected_utc
