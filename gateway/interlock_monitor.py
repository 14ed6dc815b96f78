"""Live state of the control interlocks, fed from every conditioned sample the pipeline sees.

An interlock (`tag op value` held for `hold_s`) is true only on fresh, good data: every sample
of its tag is looked at in order (not just the latest per tick, so a short excursion between
two ticks still breaks the hold), a sample that is not GOOD or breaks the condition restarts
the hold, and the newest good sample must have arrived within `fresh_s` of wall time. The hold
is measured on source (plant) time, as the PLC's own permissives are.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from gateway.config import LineConfig
from gateway.control_config import Comparison, Interlock
from gateway.ports import PipelineUpdate
from gateway.samples import Quality

COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class InterlockStatus:
    """One interlock at one instant: whether it holds and, in words, why (not)."""

    interlock: Interlock
    holds: bool
    stale: bool  # false because its input is stale, missing or not good
    why: str


@dataclass(slots=True)
class _TagTrack:
    last_value: float = math.nan
    last_t: float = -math.inf
    last_quality: int = int(Quality.STALE)
    last_good_wall: float = -math.inf  # monotonic time the newest GOOD sample arrived


@dataclass(slots=True)
class _HoldTrack:
    since: float | None = None  # source time from which the condition has held on good data


class InterlockMonitor:
    """Follows every interlock of the control config; `status()` answers for one setpoint."""

    def __init__(self, config: LineConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._names = {t.name: i for i, t in enumerate(config.tags)}
        self._interlocks: list[Interlock] = []
        for sp in config.control.setpoints.values():
            for il in sp.interlocks:
                if il not in self._interlocks:
                    self._interlocks.append(il)
        self._tags = {self._names[il.tag]: _TagTrack() for il in self._interlocks}
        self._holds = [_HoldTrack() for _ in self._interlocks]
        self._by_tag: dict[int, list[int]] = {}
        for j, il in enumerate(self._interlocks):
            self._by_tag.setdefault(self._names[il.tag], []).append(j)
        self._watched = np.fromiter(self._by_tag, np.int64, len(self._by_tag))

    def observe(self, update: PipelineUpdate) -> None:
        """Take one tick's conditioned samples (a runtime listener)."""
        self.observe_samples(
            update.samples.tag, update.samples.t, update.samples.value, update.samples.quality
        )

    def observe_samples(self, tag: np.ndarray, t: np.ndarray, value: np.ndarray, quality: np.ndarray) -> None:
        if not self._by_tag or len(tag) == 0:
            return
        now = self.clock()
        wanted = np.isin(tag, self._watched)
        for k, ts, v, q in zip(tag[wanted], t[wanted], value[wanted], quality[wanted], strict=True):
            self._sample(int(k), float(ts), float(v), int(q), now)

    def _sample(self, k: int, t: float, v: float, q: int, now: float) -> None:
        track = self._tags[k]
        track.last_value, track.last_t, track.last_quality = v, t, q
        good = q == Quality.GOOD and math.isfinite(v)
        previous_good = track.last_good_wall
        if good:
            track.last_good_wall = now
        for j in self._by_tag[k]:
            il, hold = self._interlocks[j], self._holds[j]
            if good and COMPARE[il.op](v, il.value):
                # After a silence longer than fresh_s nobody saw the condition hold: start again.
                if hold.since is None or now - previous_good > il.fresh_s:
                    hold.since = t
            else:
                hold.since = None

    def status(self, interlocks: Iterable[Interlock]) -> list[InterlockStatus]:
        now = self.clock()
        return [self._status(il, now) for il in interlocks]

    def _status(self, il: Interlock, now: float) -> InterlockStatus:
        j = self._interlocks.index(il)
        track = self._tags[self._names[il.tag]]
        if track.last_good_wall == -math.inf:
            return InterlockStatus(il, False, True, f"{il.tag}: no good sample received yet")
        age = now - track.last_good_wall
        if age > il.fresh_s:
            return InterlockStatus(il, False, True, f"{il.tag}: stale, no good sample for {age:.0f} s")
        if track.last_quality != Quality.GOOD:
            name = Quality(track.last_quality).name.lower()
            return InterlockStatus(il, False, True, f"{il.tag}: latest sample is {name}")
        if not math.isfinite(track.last_value):
            # Not good either (as in `_sample`): NaN would pass "!=" and hold with hold_s = 0.
            return InterlockStatus(il, False, True, f"{il.tag}: latest sample is not a number")
        if not COMPARE[il.op](track.last_value, il.value):
            return InterlockStatus(
                il, False, False, f"{il.tag} = {track.last_value:g}, needs {il.op} {il.value:g}"
            )
        since = self._holds[j].since
        held = track.last_t - since if since is not None else 0.0
        if held < il.hold_s:
            return InterlockStatus(
                il, False, False, f"{il.tag} {il.op} {il.value:g} held {held:.0f} s of {il.hold_s:g} s"
            )
        return InterlockStatus(il, True, False, f"{il.text()}: holds ({il.tag} = {track.last_value:g})")


__all__ = ["COMPARE", "InterlockMonitor", "InterlockStatus"]
