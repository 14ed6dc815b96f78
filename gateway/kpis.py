"""Operator KPIs over a rolling window: energy, nitrogen and condensate per tonne of feed,
availability, performance, OEE and EV equivalents (domain.md section 4, "Operator KPIs").

The pipeline owns one `KpiTracker` and calls `update` once per tick with the tick's samples,
the reconciled feed delivered in the tick and whether the line runs. Every input becomes a
cumulative series written at the boundaries of a plant-time grid (boundary b at b * bin_s),
held in a ring a little longer than the window, as the pipeline does for the balance streams:
a window's sum is the difference of two boundaries, O(1) per input, and where an increment
lands depends only on sample times, never on how the stream was cut into ticks. Between two
readings an increment is spread linearly in time, so a gap's energy lands across the gap.

Inputs and their rules:
- energy (kWh) and nitrogen (Nm3) totalizers: the increment is the reading's delta times the
  tag's factor. A negative delta is a reset or rollover: the interval counts nothing (what the
  meter counted before it restarted is unknown and is not invented), its bins are not good,
  and every window holding it is not good.
- condensate tank mass (kg): the increment is the level's rise. A fall of more than
  tank_drop_kg between two readings is an emptying: that interval counts nothing, so condensate
  made is the rise before plus the rise after; its own rise (0.1 kg at 40 kg/h and 10 s
  readings) is lost rather than invented. Smaller falls are level noise and count as they are,
  so noise cancels in a window's sum (but for the two readings around each emptying). A window's condensate is never negative. A drain slower
  than tank_drop_kg per reading would count as falls: the simulator's tank empties in one step.
- samples: GOOD and UNCERTAIN values are used, BAD, STALE, non-finite and out-of-order ones are
  not. An interval is good when both its readings are GOOD and it is at most max_gap_s long.
- feed (t) and running time: spread evenly over the tick, (previous t_now, t_now]. The first
  tick only starts the clock: its feed has no known start.

The window is the window_s ending at the newest grid boundary that t_now and every live input
(a usable reading within max_gap_s of t_now) have passed: an input that lags by a reading does
not make the newest bin look empty, and a stale one does not hold the window back (its missing
bins count nothing and are not good).

`good` needs coverage >= MIN_COVERAGE (the worst input's good share of the window, as for the
rolling yield), no reset in the window, and every input live and GOOD now. The last two go
beyond coverage on purpose: a reset loses energy, and an open gap's energy arrives only with
the next reading, so until then the figure is low.

Quality (the on-spec share of black mass: Cu, Al <= 2 %, moisture <= 5 %, F; domain.md 1.4)
needs per-lot lab assays against the buyer's spec, and none reach the gateway yet: it is None,
and OEE takes Q = 1 and says so (`oee_assumes_quality_1`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.samples import Quality

# The share of a window its inputs must cover with good data (the rule for yields, domain.md 3).
MIN_COVERAGE = 0.9
# Performance (and OEE) need this much run time in the window. Feed is counted whenever it is
# weighed, run time only while the shredder draws more than idle: around a start or a stop the
# two disagree for minutes, and a window holding only those minutes would divide a tonne by a
# few minutes of run (a live run showed 260 % of nameplate).
MIN_RUN_S = 900.0

_GOOD = int(Quality.GOOD)
_UNCERTAIN = int(Quality.UNCERTAIN)
_STALE = int(Quality.STALE)

# How a tag's readings become increments.
_TOTALIZER = 0
_TANK = 1


@dataclass(frozen=True, kw_only=True)
class KpiConfig:
    """Where the KPIs come from. Tag indices are into the line config's tag list; each factor
    converts the tag's unit to the KPI's (kWh, Nm3, kg): 1000 for an MWh meter."""

    nameplate_tph: float
    energy_tags: Sequence[tuple[int, float]] = ()
    nitrogen_tag: int | None = None
    nitrogen_factor: float = 1.0
    condensate_tag: int | None = None
    condensate_factor: float = 1.0
    tank_drop_kg: float = 20.0
    window_s: float = 4 * 3600.0
    # Fraction of time the line is planned to run: availability's denominator.
    planned: float = 1.0
    # Tonnes of feed per electric-vehicle equivalent: the JV's 13,500 t for 40,000 EVs.
    ev_pack_t: float = 13_500 / 40_000
    # The grid: the window is whole bins (window_s rounded to bin_s).
    bin_s: float = 60.0
    # Longer between two readings is a gap (six periods of the 10 s utility meters).
    max_gap_s: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "energy_tags", tuple((int(k), float(f)) for k, f in self.energy_tags))
        tags = [k for k, _ in self.energy_tags]
        tags += [k for k in (self.nitrogen_tag, self.condensate_tag) if k is not None]
        factors = [f for _, f in self.energy_tags] + [self.nitrogen_factor, self.condensate_factor]
        problems = [
            text
            for bad, text in (
                (len(set(tags)) != len(tags), "a tag is configured twice"),
                (any(k < 0 for k in tags), "tag indices must be >= 0"),
                (not all(f > 0 and math.isfinite(f) for f in factors), "unit factors must be > 0"),
                (not self.nameplate_tph > 0, "nameplate_tph must be > 0"),
                (not self.tank_drop_kg > 0, "tank_drop_kg must be > 0"),
                (not 0 < self.planned <= 1, "planned must be in (0, 1]"),
                (not self.ev_pack_t > 0, "ev_pack_t must be > 0"),
                (not self.bin_s > 0, "bin_s must be > 0"),
                (not self.window_s >= self.bin_s, "window_s must be at least bin_s"),
                (not self.max_gap_s > 0, "max_gap_s must be > 0"),
            )
            if bad
        ]
        if problems:
            raise ValueError("KpiConfig: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class KpiFigures:
    """KPIs over the window ending at t_end (plant time); None when not computable."""

    t_end: float
    specific_energy_kwh_per_t: float | None  # None: no energy meter or no feed
    nitrogen_nm3_per_t: float | None
    condensate_kg_per_t: float | None
    availability: float | None  # running time / planned time of the tracked part of the window
    # The window's feed / its running time / nameplate (None: never running), so that
    # availability x performance = feed / (planned time x nameplate), the usual OEE identity.
    performance: float | None
    quality: float | None  # always None: no on-spec measurement reaches the gateway yet
    oee: float | None  # availability x performance x 1
    oee_assumes_quality_1: bool
    ev_equivalents_window: float  # feed / ev_pack_t
    feed_t_window: float
    coverage: float  # the worst input's good share of the window
    good: bool
    resets: int  # totalizer resets and rollovers in the window


class _Grid:
    """Cumulative series on the plant-time grid, one row per input, in rings of boundaries.

    A row holds, at each boundary, its cumulative amount, the count of good intervals and the
    count of events (resets) up to it. Interval j is (j-1, j] in boundaries."""

    def __init__(self, rows: int, bin_s: float, ring_bins: int) -> None:
        self.bin_s = bin_s
        self.ring_bins = ring_bins
        self.cum = np.zeros((rows, ring_bins))
        self.good = np.zeros((rows, ring_bins), np.int64)
        self.events = np.zeros((rows, ring_bins), np.int64)
        self.started = [False] * rows
        self.head = [0] * rows  # newest boundary written
        self.first = [0] * rows  # oldest boundary the row has (its first after its start)
        self.last_t = [math.nan] * rows  # where the row's cumulative is known up to
        self.last_cum = [0.0] * rows
        self.good_count = [0] * rows  # good intervals up to head
        self.event_count = [0] * rows  # events written up to head
        # Since the newest boundary: were all intervals good, and events not yet written.
        self.pending_good = [True] * rows
        self.pending_events = [0] * rows

    def start(self, r: int, t: float) -> None:
        self.started[r] = True
        self.last_t[r] = t
        self.first[r] = math.floor(t / self.bin_s) + 1
        self.head[r] = self.first[r] - 1

    def advance(self, r: int, t1: float, amount: float, good: bool, events: int) -> None:
        """Add `amount` over (last_t, t1], spread linearly; t1 > last_t."""
        t0, c0 = self.last_t[r], self.last_cum[r]
        self.pending_good[r] = self.pending_good[r] and good
        self.pending_events[r] += events
        b_lo = math.floor(t0 / self.bin_s) + 1
        b_hi = math.floor(t1 / self.bin_s)
        if b_hi >= b_lo:
            nb = self.ring_bins
            if b_hi - b_lo + 1 > nb:
                # A gap longer than the ring: its older boundaries would be overwritten anyway.
                skipped = b_hi - nb + 1 - b_lo
                self.good_count[r] += int(self.pending_good[r]) + (skipped - 1) * int(good)
                self.event_count[r] += self.pending_events[r]
                self.pending_good[r] = good
                self.pending_events[r] = 0
                b_lo = b_hi - nb + 1
            span = t1 - t0
            for b in range(b_lo, b_hi + 1):
                j = b % nb
                self.good_count[r] += int(self.pending_good[r])
                self.event_count[r] += self.pending_events[r]
                self.cum[r, j] = c0 + amount * ((b * self.bin_s - t0) / span)
                self.good[r, j] = self.good_count[r]
                self.events[r, j] = self.event_count[r]
                # Later intervals of this stretch lie wholly inside it.
                self.pending_good[r] = good
                self.pending_events[r] = 0
            self.head[r] = b_hi
            self.first[r] = max(self.first[r], b_hi - nb + 1)
            if t1 == b_hi * self.bin_s:
                self.pending_good[r] = True
        self.last_t[r] = t1
        self.last_cum[r] = c0 + amount

    def window(self, r: int, start: int, end: int) -> tuple[float, int, int, int]:
        """(amount, good intervals, events, intervals held) over boundaries (start, end]."""
        if not self.started[r]:
            return 0.0, 0, 0, 0
        head = self.head[r]
        a = max(start, self.first[r], head - self.ring_bins + 1)
        b = min(end, head)
        if b <= a:
            return 0.0, 0, 0, 0
        ja, jb = a % self.ring_bins, b % self.ring_bins
        return (
            float(self.cum[r, jb] - self.cum[r, ja]),
            int(self.good[r, jb] - self.good[r, ja]),
            int(self.events[r, jb] - self.events[r, ja]),
            b - a,
        )


class KpiTracker:
    """Rolling-window operator KPIs, fed once per pipeline tick."""

    def __init__(self, config: KpiConfig) -> None:
        self.config = config
        c = config
        # Rows: energy meters, then nitrogen and condensate when configured, then feed, running.
        self._tag_rows: dict[int, int] = {}
        self._factor: list[float] = []
        self._kind: list[int] = []
        for k, factor in c.energy_tags:
            self._add_tag(k, factor, _TOTALIZER)
        self._energy_rows = list(range(len(c.energy_tags)))
        self._nitrogen_row = (
            None if c.nitrogen_tag is None else self._add_tag(c.nitrogen_tag, c.nitrogen_factor, _TOTALIZER)
        )
        self._condensate_row = (
            None if c.condensate_tag is None else self._add_tag(c.condensate_tag, c.condensate_factor, _TANK)
        )
        n_tags = len(self._kind)
        self._feed_row = n_tags
        self._run_row = n_tags + 1
        self._tags = np.array(list(self._tag_rows), np.int64)

        self.window_bins = max(1, round(c.window_s / c.bin_s))
        # A live input holds the window's end back by at most this many boundaries.
        lag_bins = math.ceil(c.max_gap_s / c.bin_s) + 2
        self._grid = _Grid(n_tags + 2, c.bin_s, self.window_bins + lag_bins + 1)

        self._last_raw = [0.0] * n_tags
        self._last_q = [_GOOD] * n_tags
        self._latest_q = [int(Quality.STALE)] * n_tags  # of the newest sample, usable or not
        # Feed of ticks that did not advance plant time, carried into the next one.
        self._feed_carry = 0.0
        self.resets = 0
        self.tank_emptyings = 0

    def _add_tag(self, tag: int, factor: float, kind: int) -> int:
        row = len(self._kind)
        self._tag_rows[tag] = row
        self._factor.append(factor)
        self._kind.append(kind)
        return row

    def update(
        self,
        t_now: float,
        tag_index: np.ndarray,
        t: np.ndarray,
        value: np.ndarray,
        quality: np.ndarray,
        feed_t_delta: float,
        running: bool,
    ) -> None:
        """One tick: the tick's samples (any tags; time-ordered per tag), the feed delivered in
        it (t) and whether the line ran over it."""
        if len(tag_index) and len(self._tags):
            picked = np.flatnonzero(np.isin(tag_index, self._tags))
            for k, ti, v, q in zip(
                tag_index[picked].tolist(),
                t[picked].tolist(),
                value[picked].tolist(),
                quality[picked].tolist(),
                strict=True,
            ):
                self._sample(self._tag_rows[k], ti, v, q)
        self._tick(float(t_now), float(feed_t_delta), bool(running))

    def _sample(self, r: int, t: float, value: float, q: int) -> None:
        g = self._grid
        if q > _STALE or (g.started[r] and t < g.last_t[r]):
            # Not a reading (a conditioning code such as dropped-out-of-order), or older than
            # what the row holds: totals move forward in time only.
            return
        self._latest_q[r] = q
        raw = value * self._factor[r]
        if q > _UNCERTAIN or not math.isfinite(raw):
            self._latest_q[r] = max(q, int(Quality.BAD))
            return
        if not g.started[r]:
            g.start(r, t)
            self._last_raw[r], self._last_q[r] = raw, q
            return
        dt = t - g.last_t[r]
        if dt <= 0.0:
            return
        good = dt <= self.config.max_gap_s and q == _GOOD and self._last_q[r] == _GOOD
        delta = raw - self._last_raw[r]
        events = 0
        if self._kind[r] == _TANK:
            if delta < -self.config.tank_drop_kg:
                delta = 0.0
                self.tank_emptyings += 1
        elif delta < 0.0:
            delta, good, events = 0.0, False, 1
            self.resets += 1
        g.advance(r, t, delta, good, events)
        self._last_raw[r], self._last_q[r] = raw, q

    def _tick(self, t_now: float, feed_t: float, running: bool) -> None:
        g = self._grid
        good = math.isfinite(feed_t)
        feed_t = feed_t if good else 0.0
        if not g.started[self._feed_row]:
            g.start(self._feed_row, t_now)
            g.start(self._run_row, t_now)
            return
        dt = t_now - g.last_t[self._feed_row]
        if dt <= 0.0:
            self._feed_carry += feed_t
            return
        g.advance(self._feed_row, t_now, feed_t + self._feed_carry, good, 0)
        g.advance(self._run_row, t_now, dt if running else 0.0, True, 0)
        self._feed_carry = 0.0

    def _live(self, r: int, t_now: float) -> bool:
        g = self._grid
        return g.started[r] and g.last_t[r] >= t_now - self.config.max_gap_s

    def figures(self, t_now: float) -> KpiFigures:
        """The KPIs over the window ending at the newest boundary t_now and the live inputs
        have passed (see the module docstring)."""
        c, g = self.config, self._grid
        rows = range(len(g.started))
        end = math.floor(t_now / c.bin_s)
        for r in rows:
            if self._live(r, t_now):
                end = min(end, g.head[r])
        start = end - self.window_bins
        totals = [g.window(r, start, end) for r in rows]

        feed_t = totals[self._feed_row][0]
        run_s, _, _, tracked_bins = totals[self._run_row]
        coverage = min(good for _, good, _, _ in totals) / self.window_bins
        resets = sum(events for _, _, events, _ in totals)
        inputs_now = all(self._live(r, t_now) for r in rows) and all(q == _GOOD for q in self._latest_q)

        def per_tonne(amount: float | None) -> float | None:
            return None if amount is None or feed_t <= 0.0 else amount / feed_t

        energy = sum(totals[r][0] for r in self._energy_rows) if self._energy_rows else None
        nitrogen = None if self._nitrogen_row is None else totals[self._nitrogen_row][0]
        condensate = None if self._condensate_row is None else max(totals[self._condensate_row][0], 0.0)
        planned_s = c.planned * tracked_bins * c.bin_s
        availability = run_s / planned_s if planned_s > 0 else None
        performance = feed_t / (run_s / 3600.0) / c.nameplate_tph if run_s >= MIN_RUN_S else None
        oee = availability * performance if availability is not None and performance is not None else None
        return KpiFigures(
            t_end=end * c.bin_s,
            specific_energy_kwh_per_t=per_tonne(energy),
            nitrogen_nm3_per_t=per_tonne(nitrogen),
            condensate_kg_per_t=per_tonne(condensate),
            availability=availability,
            performance=performance,
            quality=None,
            oee=oee,
            oee_assumes_quality_1=True,
            ev_equivalents_window=feed_t / c.ev_pack_t,
            feed_t_window=feed_t,
            coverage=coverage,
            good=coverage >= MIN_COVERAGE and resets == 0 and inputs_now,
            resets=resets,
        )


__all__ = ["MIN_COVERAGE", "MIN_RUN_S", "KpiConfig", "KpiFigures", "KpiTracker"]
