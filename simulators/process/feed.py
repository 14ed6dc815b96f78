"""The feeder: lots in sequence, modules through the airlock as items, scrap as a surging belt.

The feed enters the plant where it passes the feed belt weigher (`bw_feed.*`): that is the
balance's feed point. Every step's feed belongs to exactly one lot (a lot ends at a step or
batch boundary; the next starts on the next step), which keeps lot attribution exact.

Discrete feed (modules): at the start of each airlock cycle (1-3 min, drawn per cycle) the
operator loads whole items (20-60 kg each) onto the airlock platform scale until the batch
covers what the setpoint asks for over the cycle plus what earlier batches fell short (never
more than the platform's 600 kg); the batch then crosses the weigher evenly over the cycle. The
platform scale's totalizer (`scale_total_kg`, what the PLC sums) steps up by the batch's true
mass as it is weighed, so at the next batch, once this one has crossed, the weigher's total
has grown by exactly that much. Continuous feed (scrap): the feeder rate times
an AR(1) surge (1-sigma 10 %: ±20 % at 2 sigma). Either way the airlock cycles while feeding,
and each cycle lets a little air in (see `inerting`).

The feeder rate follows the setpoint with a first-order lag; when it (re)starts it rises no
faster than `restart_ramp_tph_per_min`. Disabled (trip, line stop, shredder jam), it stops at
once and a batch in progress waits on the belt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulators.process.common import Normals, ar1, lag
from simulators.process.material import FeedType, Lot, Range, draw_lot


@dataclass(frozen=True, slots=True)
class FeedParams:
    """Feeder and lot parameters (domain.md §1.5; assumed values)."""

    surge_sigma_rel: float = 0.10
    surge_tau_s: float = 60.0
    feeder_tau_s: float = 20.0
    restart_ramp_tph_per_min: float = 0.5
    lot_mass_t: Range = (2.0, 8.0)
    airlock_cycle_s: Range = (60.0, 180.0)
    platform_max_kg: float = 600.0
    belt_speed_m_s: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.lot_mass_t[0] <= self.lot_mass_t[1]:
            raise ValueError("lot_mass_t must be a positive range")
        if not 0 < self.airlock_cycle_s[0] <= self.airlock_cycle_s[1]:
            raise ValueError("airlock_cycle_s must be a positive range")
        if self.feeder_tau_s <= 0 or self.surge_tau_s <= 0 or self.restart_ramp_tph_per_min <= 0:
            raise ValueError("feeder time constants and ramp must be positive")


class Feeder:
    """Produces each step's feed mass (kg) and the lot it belongs to."""

    def __init__(
        self,
        params: FeedParams,
        feed_mix: tuple[FeedType, ...],
        dt_s: float,
        *,
        initial_rate_tph: float,
        surge_noise: Normals,
        lot_rng: np.random.Generator,
        item_rng: np.random.Generator,
        on_new_lot: Callable[[Lot], None],
        on_close_lot: Callable[[Lot], None],
    ) -> None:
        self.p = params
        self.dt_s = dt_s
        self._mix = feed_mix
        w = np.array([ft.weight for ft in feed_mix], dtype=np.float64)
        if not len(w) or w.sum() <= 0:
            raise ValueError("the feed mix needs at least one feed type with a positive weight")
        self._mix_p = w / w.sum()
        self._surge_noise = surge_noise
        self._lot_rng = lot_rng
        self._item_rng = item_rng
        self._on_new_lot = on_new_lot
        self._on_close_lot = on_close_lot
        self._a = lag(dt_s, params.feeder_tau_s)
        self._ramp_per_step = params.restart_ramp_tph_per_min / 60.0 * dt_s
        self._ar_surge = ar1(dt_s, params.surge_tau_s, params.surge_sigma_rel)

        self.override: FeedType | None = None  # lots of this type only (None: the mix)
        self.rate_tph = initial_rate_tph  # the feeder's own rate (without surge)
        self.belt_tph = 0.0  # what crossed the weigher this step, t/h
        self.surge = 0.0
        self.credit_kg = 0.0
        self.item_mass_kg = 0.0  # last batch on the airlock platform scale
        self.scale_total_kg = 0.0  # every batch weighed on it (continuous feed never is)
        self.items = 0
        self.airlock_cycles = 0
        self.cycled = False  # an airlock cycle started this step
        self._cycle_left = 0  # steps left in the current airlock cycle
        self._batch_left_kg = 0.0  # of the current batch, not yet over the weigher
        self._batch_steps_left = 0
        self.lot_index = 0
        self.lot: Lot = self._draw_lot()
        self._lot_unbatched_kg = self.lot.mass_kg  # mass of the lot not yet fed or batched
        self._lot_fed_kg = 0.0

    @property
    def batch_on_belt_kg(self) -> float:
        """Of the batches weighed, the mass not yet over the belt weigher (waits while stopped)."""
        return self._batch_left_kg

    # --- lots --------------------------------------------------------------------------------
    def _draw_lot(self) -> Lot:
        rng = self._lot_rng
        k = int(rng.choice(len(self._mix), p=self._mix_p))  # drawn even with an override: the
        ft = self.override if self.override is not None else self._mix[k]  # lot stream stays aligned
        lot = draw_lot(self.lot_index, ft, self.p.lot_mass_t, rng)
        self.lot_index += 1
        self._on_new_lot(lot)
        return lot

    def _next_lot(self) -> None:
        self._on_close_lot(self.lot)
        self.lot = self._draw_lot()
        self._lot_unbatched_kg = self.lot.mass_kg
        self._lot_fed_kg = 0.0
        self._batch_left_kg = 0.0
        self._batch_steps_left = 0

    def change_lot_type(self, feed_type: FeedType | None) -> None:
        """From now on lots are of `feed_type` (None: the mix); the current lot closes now and a
        batch still on the belt goes back to the store (it stays in the scale total: it was
        weighed, it just never reaches the weigher)."""
        self.override = feed_type
        self._next_lot()

    # --- step --------------------------------------------------------------------------------
    def step(self, enabled: bool, sp_tph: float) -> float:
        """This step's feed mass in kg (all of it from `self.lot`)."""
        self.cycled = False
        if not enabled:
            self.rate_tph = 0.0
            self.belt_tph = 0.0
            return 0.0
        r = self.rate_tph
        r += (sp_tph - r) * self._a
        if r - self.rate_tph > self._ramp_per_step:
            r = self.rate_tph + self._ramp_per_step
        self.rate_tph = r
        dt = self.dt_s

        if self._cycle_left <= 0 and r > 0.0:
            lo, hi = self.p.airlock_cycle_s
            self._cycle_left = max(1, round(float(self._item_rng.uniform(lo, hi)) / dt))
            self.cycled = True
            self.airlock_cycles += 1
            if self.lot.feed_type.discrete:
                # What the setpoint asks for over this cycle, plus what the last batches owe.
                self.credit_kg = min(self.credit_kg + r * self._cycle_left * dt / 3.6, self.p.platform_max_kg)
                self._load_batch(self._cycle_left)
        if self._cycle_left > 0:
            self._cycle_left -= 1

        if self.lot.feed_type.discrete:
            m = self._batch_step()
        else:
            phi, c = self._ar_surge
            self.surge = phi * self.surge + c * self._surge_noise.next()
            m = r * (1.0 + self.surge) * dt / 3.6
            if m < 0.0:
                m = 0.0
            if m >= self._lot_unbatched_kg:
                m = self._lot_unbatched_kg
                self._lot_unbatched_kg = 0.0
            else:
                self._lot_unbatched_kg -= m
        self._lot_fed_kg += m
        self.belt_tph = m * 3.6 / dt
        return m

    def after_step(self) -> None:
        """Close the lot once all of it has crossed the weigher (called after its last mass
        was booked, so the step's mass belongs to the old lot)."""
        if self._lot_unbatched_kg <= 0.0 and self._batch_left_kg <= 0.0:
            self._next_lot()

    def _load_batch(self, cycle_steps: int) -> None:
        """Whole items of the current lot onto the platform until they cover the credit."""
        if self._batch_left_kg > 0.0:
            return  # the belt stopped during the last cycle: that batch goes first, nothing is weighed
        lo, hi = self.lot.feed_type.item_mass_kg
        batch = 0.0
        n = 0
        while self._lot_unbatched_kg > 0.0 and batch < self.credit_kg:
            item = float(self._item_rng.uniform(lo, hi))
            if n > 0 and batch + item > self.p.platform_max_kg:
                break
            if item >= self._lot_unbatched_kg:
                item = self._lot_unbatched_kg  # the lot's last item
            self._lot_unbatched_kg -= item
            batch += item
            n += 1
        if self._lot_unbatched_kg < 0.0:
            self._lot_unbatched_kg = 0.0
        self.credit_kg -= batch
        self.items += n
        self.item_mass_kg = batch
        self.scale_total_kg += batch  # the true mass, the lot's cut last item included
        self._batch_left_kg = batch
        self._batch_steps_left = cycle_steps

    def _batch_step(self) -> float:
        left = self._batch_left_kg
        if left <= 0.0:
            return 0.0
        n = self._batch_steps_left
        if n <= 1:
            self._batch_left_kg = 0.0
            self._batch_steps_left = 0
            return left
        m = left / n
        self._batch_left_kg = left - m
        self._batch_steps_left = n - 1
        return m


__all__ = ["FeedParams", "Feeder"]
