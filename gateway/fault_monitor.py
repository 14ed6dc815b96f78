"""Runs the fault detectors over each tick and re-estimates the transport delay.

The pipeline owns one `FaultMonitor` and hands it every tick's conditioned samples with what
it knows after the tick (latest values, totalizer event counts, recent feed rate). The monitor
turns the `[detectors]` config into detector instances (`gateway.detectors`), tracks the
delay (`gateway.delay_estimator.DelayTracker`) from the dryer's hold-up over throughput, and
answers three questions: which alarm conditions hold, which delay the windows should use,
and whether a balance input is currently suspect (then no yield is GOOD).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from gateway.config import TOTAL_UNITS, LineConfig
from gateway.delay_estimator import DelayEstimate, DelayStatus, DelayTracker
from gateway.detectors import (
    FLAG_IMPLAUSIBLE,
    FLAG_RESET,
    FLAG_ROLLOVER,
    FLAG_SPIKE,
    ClockSkewDetector,
    Conditions,
    SkewConfig,
    SpikeCounter,
    StuckConfig,
    StuckDetector,
    TotalizerConfig,
    TotalizerEvents,
    wrong_delay_conditions,
)
from gateway.drift_detector import DriftConfig, ZeroDriftDetector
from gateway.samples import Quality
from gateway.weigher_reference import WeigherReference

# A tick without totalizer events (shared; nothing writes to them).
_NO_TAGS = np.zeros(0, np.int64)
_NO_TIMES = np.zeros(0)

# A feed below this share of nameplate says nothing about the dryer's residence time.
MIN_FEED_SHARE = 0.2
# The hold-up is steady enough to read a residence time from when its means over the last
# STEADY_H hours of re-estimation periods spread by less than STEADY_SPREAD of the newest.
STEADY_H = 1.0
STEADY_SPREAD = 0.1


class FaultMonitor:
    def __init__(self, config: LineConfig, balance_tags: tuple[int, int]) -> None:
        d = config.detectors
        self.config = config
        names = [t.name for t in config.tags]
        n = len(names)
        self.balance_tags = balance_tags
        self.activity_tag = None if d.activity_tag is None else config.tag_index(d.activity_tag)
        floor = np.full(n, np.nan)
        for name in d.stuck_tags:
            # Only exact repeats count as flat: instrument noise moves a live reading, and a
            # quantised one steps; a value that repeats to the last bit is a frozen source.
            floor[config.tag_index(name)] = 1e-12
        balance = np.zeros(n, np.bool_)
        balance[list(balance_tags)] = True
        self.stuck = StuckDetector(
            names, floor, balance, StuckConfig(window_s=d.stuck_after_s, timestamp_window_s=d.stuck_after_s)
        )
        self.watched = ~np.isnan(floor)
        # A reading at the bottom of its range (an empty belt at 0 t/h) repeats legitimately.
        self.floor_value = np.array([t.range[0] for t in config.tags], np.float64)
        self.skew = (
            ClockSkewDetector(names, [t.driver for t in config.tags], SkewConfig(threshold_s=d.clock_skew_s))
            if d.clock_skew_s > 0
            else None
        )
        self.spikes = SpikeCounter(names)
        self.totalizers = TotalizerEvents(names, TotalizerConfig(hold_s=d.totalizer_event_hold_s))
        self._events_seen = np.zeros((2, 3), np.int64)
        self.tau_cfg_s = config.yield_.transport_delay_min * 60.0
        self.delay = DelayTracker(self.tau_cfg_s, tolerance=d.delay_tolerance)
        self.holdup_tag = None if d.holdup_tag is None else config.tag_index(d.holdup_tag)
        self.holdup_to_t = 1.0
        if d.holdup_tag is not None:
            self.holdup_to_t = TOTAL_UNITS.get(config.tags[self.holdup_tag].unit, math.nan)
        self._next_delay_t = -math.inf
        self._holdup_sum = 0.0
        self._holdup_n = 0
        self._steady_periods = max(2, round(STEADY_H * 3600 / d.delay_every_s))
        self._recent_holdups: deque[float] = deque(maxlen=self._steady_periods)
        self.t_now = math.nan
        self.running = False  # the activity tag says the line runs (after the last tick)
        self._balance_suspect = False
        self.reference: WeigherReference | None = None
        self.feed_drift: ZeroDriftDetector | None = None
        if d.feed_reference_tag is not None:
            feed = config.tags[balance_tags[0]]
            ref = config.tag_index(d.feed_reference_tag)
            self.reference = WeigherReference(
                balance_tags[0], ref, feed.to_tonnes, TOTAL_UNITS[config.tags[ref].unit]
            )
            self.feed_drift = ZeroDriftDetector(
                feed.name,
                d.feed_reference_tag,
                # The block sigma is learned from the pairs; the configured one is its floor.
                DriftConfig(sigma_floor_rel=d.drift_sigma_rel),
            )

    def observe(
        self,
        tag: np.ndarray,
        t: np.ndarray,
        value: np.ndarray,
        cq: np.ndarray,
        spikes: tuple[np.ndarray, np.ndarray],
        arrival: float | None,
        t_now: float,
        last_value: np.ndarray,
        last_quality: np.ndarray,
        st_events: np.ndarray,
        feed_rate_tph: float,
    ) -> None:
        """One tick. `cq` conditioned quality per sample, `spikes` the (tag, time) of the spikes
        confirmed in it, `arrival` the time the samples arrived in the source timestamps' time
        base (None: unknown, no clock-skew check)."""
        if not math.isfinite(t_now):
            return  # no sample yet: nothing to judge
        self.t_now = t_now
        usable = cq <= Quality.UNCERTAIN
        active = self._active(last_value, last_quality)
        self.running = active
        watched = usable & self.watched[tag] & (value > self.floor_value[tag])
        self.stuck.update(tag[watched], t[watched], value[watched], t_now, active)
        # Judged once per tick: every figure of the tick asks.
        self._balance_suspect = self._judge_balance()
        if self.skew is not None and arrival is not None and usable.any():
            self.skew.update(tag[usable], t[usable], arrival)
        spike_tag, spike_t = spikes
        self.spikes.update(spike_tag, spike_t, np.full(len(spike_tag), FLAG_SPIKE), t_now)
        self._totalizer_events(st_events, t_now)
        if self.reference is not None and self.feed_drift is not None:
            for pair in self.reference.observe(tag, t, value, cq):
                self.feed_drift.update_balance(pair.t, pair.belt_t, pair.ref_t, pair.t_start)
        self._observe_holdup(last_value, last_quality)
        if self.holdup_tag is not None and t_now >= self._next_delay_t:
            self._next_delay_t = t_now + self.config.detectors.delay_every_s
            self._estimate_delay(feed_rate_tph)

    def _active(self, last_value: np.ndarray, last_quality: np.ndarray) -> bool:
        k = self.activity_tag
        if k is None:
            return False
        return bool(
            last_quality[k] <= Quality.UNCERTAIN and last_value[k] > self.config.detectors.activity_min
        )

    def _totalizer_events(self, st_events: np.ndarray, t_now: float) -> None:
        """The accumulation kernel counts rollovers/resets/implausible jumps per balance stream."""
        new = st_events - self._events_seen
        if not new.any():
            self.totalizers.update(_NO_TAGS, _NO_TIMES, _NO_TAGS, t_now)
            return
        self._events_seen = st_events.copy()
        tags, flags = [], []
        for s, k in enumerate(self.balance_tags):
            for col, bit in enumerate((FLAG_ROLLOVER, FLAG_RESET, FLAG_IMPLAUSIBLE)):
                if new[s, col]:
                    tags.append(k)
                    flags.append(bit)
        self.totalizers.update(np.array(tags), np.full(len(tags), t_now), np.array(flags), t_now)

    def _observe_holdup(self, last_value: np.ndarray, last_quality: np.ndarray) -> None:
        k = self.holdup_tag
        if k is not None and last_quality[k] == Quality.GOOD and math.isfinite(last_value[k]):
            self._holdup_sum += float(last_value[k]) * self.holdup_to_t
            self._holdup_n += 1

    def _estimate_delay(self, feed_rate_tph: float) -> None:
        """tau = fixed part + mean dryer hold-up / feed rate, over the last re-estimation period.

        The dryer's residence is hold-up over throughput; the feed belt's rate stands in for the
        dryer's throughput (it runs a little high: evaporation leaves the dryer as vapour)."""
        d = self.config.detectors
        holdup_t = self._holdup_sum / self._holdup_n if self._holdup_n else math.nan
        self._holdup_sum, self._holdup_n = 0.0, 0
        nameplate = self.config.line.nameplate.tonnes_per_hour
        if math.isfinite(holdup_t):
            self._recent_holdups.append(holdup_t)
        recent = self._recent_holdups
        if not (math.isfinite(holdup_t) and math.isfinite(feed_rate_tph)):
            est = DelayEstimate(math.nan, math.nan, 0, False, "no good hold-up or feed rate")
        elif len(recent) < self._steady_periods or max(recent) - min(recent) > STEADY_SPREAD * holdup_t:
            # Filling, emptying or swinging: hold-up over throughput is not the residence time.
            est = DelayEstimate(math.nan, math.nan, 0, False, "dryer hold-up not steady")
        elif feed_rate_tph < MIN_FEED_SHARE * nameplate:
            est = DelayEstimate(math.nan, math.nan, 0, False, "feed too low to judge the residence time")
        else:
            tau = d.fixed_delay_min * 60.0 + holdup_t / feed_rate_tph * 3600.0
            est = DelayEstimate(tau, math.nan, 1, True, "dryer hold-up / feed rate")
        self.delay.update(est)

    def delay_status(self) -> DelayStatus:
        return self.delay.status()

    def delay_s(self) -> float:
        """The delay the windows should use: the estimate while the configured one is wrong."""
        status = self.delay.status()
        return status.tau_est_s if status.wrong_delay else self.tau_cfg_s

    def balance_suspect(self) -> bool:
        """A balance input is stuck or its source clock frozen: no yield figure may be GOOD."""
        return self._balance_suspect

    def _judge_balance(self) -> bool:
        return self.stuck.any_suspect(self.balance_tags)

    def conditions(self) -> Conditions:
        out: Conditions = {}
        out.update(self.stuck.conditions())
        if self.skew is not None:
            out.update(self.skew.conditions())
        out.update(self.spikes.conditions())
        out.update(self.totalizers.conditions())
        if self.feed_drift is not None:
            out.update(self.feed_drift.conditions())
        status = self.delay.status()
        out.update(wrong_delay_conditions("yield", status.wrong_delay, status.tau_est_s, status.tau_cfg_s))
        return out
