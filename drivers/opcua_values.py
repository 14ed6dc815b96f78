"""From OPC-UA DataValues to samples: quality with the status code kept, timestamps, repeats.

Quality: the StatusCode's severity bits give good / uncertain / bad; the full code travels
with the sample. Time: the source timestamp, else the server's (both plant clocks); with
neither, our clock stands in and the sample is at best UNCERTAIN. A value that is not a
number is BAD.

Repeats: after a reconnect the server sends every monitored item's current value again, and a
poll reads the same value until the source updates it. `LatestSeen` drops a sample identical
to the last one passed on for its tag (same source time, value and status), so a last value is
never re-emitted as current and a stale tag stays stale until its source really updates it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import NamedTuple

from asyncua import ua

from gateway.samples import Quality, quality_from_status_code

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_seconds(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # asyncua hands out naive UTC datetimes
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH).total_seconds()


class Reading(NamedTuple):
    t: float
    value: float
    quality: Quality
    status: int


def stamped_now(quality: Quality) -> tuple[float, Quality]:
    """A reading without any timestamp: our clock, and the time is not the source's."""
    return datetime.now(UTC).timestamp(), max(quality, Quality.UNCERTAIN)


def reading_of(dv: ua.DataValue) -> Reading:
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    quality = quality_from_status_code(status)
    t = epoch_seconds(dv.SourceTimestamp)
    if t is None:
        t = epoch_seconds(dv.ServerTimestamp)
    if t is None:
        t, quality = stamped_now(quality)
    raw = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, bool):
        value = float(raw)
    else:
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
            quality = Quality.BAD
    return Reading(t, value, quality, status)


class LatestSeen:
    """Per-tag last reading passed on; drops exact repeats (see the module docstring)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float, int]] = {}
        self.repeats_dropped = 0

    def is_repeat(self, tag: int, r: Reading) -> bool:
        key = (r.t, r.value, r.status)
        prev = self._last.get(tag)
        if prev is not None and (
            prev == key or (math.isnan(r.value) and prev[0] == r.t and prev[2] == r.status)
        ):
            self.repeats_dropped += 1
            return True
        self._last[tag] = key
        return False
