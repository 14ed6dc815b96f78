"""The plant's shift calendar: which shift a plant time falls in, by local wall-clock time.

Shifts start at `first_start` local time and follow each other every `shift_h` hours; `shift_h`
divides 24, so every day has the same pattern. Boundaries are local wall times converted to
epoch seconds with the plant's time zone, so a shift across a daylight-saving change is an hour
longer or shorter, as the shift report on the plant floor is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Shift:
    """One shift: [start, end) in epoch seconds, and its label (local start, ISO 8601)."""

    start: float
    end: float
    label: str


class ShiftCalendar:
    def __init__(self, shift_h: float, first_start: time, timezone: str) -> None:
        if shift_h <= 0 or (24 / shift_h) != round(24 / shift_h):
            raise ValueError(f"shift_h: {shift_h} h does not divide a day into whole shifts")
        self.shift_h = shift_h
        self.first_start = first_start
        self.tz = ZoneInfo(timezone)
        self._per_day = round(24 / shift_h)

    @lru_cache(maxsize=64)  # noqa: B019 - a handful of days per calendar; the calendar lives as long as the config
    def _day_starts(self, day_ordinal: int) -> tuple[float, ...]:
        day = datetime.fromordinal(day_ordinal)
        base = datetime.combine(day.date(), self.first_start)
        return tuple(
            (base + timedelta(hours=self.shift_h * k)).replace(tzinfo=self.tz).timestamp()
            for k in range(self._per_day)
        )

    def shift_at(self, t: float) -> Shift:
        """The shift that contains plant time `t` (epoch seconds)."""
        local = datetime.fromtimestamp(t, self.tz)
        starts: list[float] = []
        for d in (-1, 0, 1):
            starts += self._day_starts(local.toordinal() + d)
        starts.sort()
        i = max(j for j, s in enumerate(starts) if s <= t)
        start, end = starts[i], starts[i + 1]
        label = datetime.fromtimestamp(start, self.tz).isoformat(timespec="minutes")
        return Shift(start, end, label)
