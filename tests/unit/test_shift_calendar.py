"""The shift calendar: shifts by local wall time, every plant time in exactly one shift."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.shift_calendar import ShiftCalendar

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC).timestamp()


def test_three_shifts_from_six_utc() -> None:
    cal = ShiftCalendar(8, time(6, 0), "UTC")
    s = cal.shift_at(T0)
    assert (s.start, s.end, s.label) == (T0, T0 + 8 * 3600, "2026-01-05T06:00+00:00")
    assert cal.shift_at(T0 - 1).start == T0 - 8 * 3600  # 22:00 the day before
    assert cal.shift_at(T0 + 16 * 3600 + 1).label == "2026-01-05T22:00+00:00"


def test_night_shift_across_spring_forward_is_an_hour_shorter() -> None:
    cal = ShiftCalendar(8, time(6, 0), "Europe/Berlin")
    # 2026-03-29 02:00 local clocks jump to 03:00: the 22:00-06:00 shift lasts 7 h.
    night = cal.shift_at(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp())
    assert night.label == "2026-03-28T22:00+01:00"
    assert night.end - night.start == 7 * 3600
    assert cal.shift_at(night.end).end - night.end == 8 * 3600


@pytest.mark.parametrize("hours", [5.0, 7.0, 0.7])
def test_shift_length_must_divide_a_day(hours: float) -> None:
    with pytest.raises(ValueError, match="whole shifts"):
        ShiftCalendar(hours, time(6, 0), "UTC")


@given(
    st.floats(0, 400 * 86400),
    st.sampled_from([6.0, 8.0, 12.0, 24.0]),
    st.sampled_from(["UTC", "America/New_York"]),
)
@settings(max_examples=200, deadline=None)
def test_every_time_is_in_its_shift_and_shifts_tile(offset: float, hours: float, tz: str) -> None:
    cal = ShiftCalendar(hours, time(6, 30), tz)
    t = T0 + offset
    s = cal.shift_at(t)
    assert s.start <= t < s.end
    assert cal.shift_at(s.end).start == s.end  # the next shift starts where this one ends
    assert abs((s.end - s.start) - hours * 3600) <= 3600  # DST moves a boundary by an hour at most
