"""Per-shift black-mass yield, read off the pipeline's plant-time rings of cumulative mass.

A shift's yield is a ratio of totals, delay-aligned like the rolling one: black mass out over
(start, end] divided by feed in over (start - tau, end - tau] (domain.md section 3). While the
shift runs, a running figure covers (start, now]; once the black-mass stream has passed the
shift's end (and the feed stream its delayed end), the final figure is published once, with its
coverage against the whole shift. A figure is GOOD only when that coverage reaches
`min_coverage` and the balance inputs are currently good.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gateway.config import LineConfig
from gateway.ports import YieldFigure
from gateway.samples import Quality
from gateway.shift_calendar import Shift, ShiftCalendar


def window_totals(
    ring_cum: np.ndarray,
    ring_good: np.ndarray,
    ring_head: np.ndarray,
    ring_first: np.ndarray,
    s: int,
    end_bin: int,
    length: int,
) -> tuple[float, int] | None:
    """(mass over grid intervals (end-length, end], good intervals among them), or None when
    the ring does not hold both ends (not there yet, or already overwritten)."""
    nb = ring_cum.shape[1]
    start = end_bin - length
    if length <= 0 or end_bin > ring_head[s] or start < ring_first[s] or start < ring_head[s] - nb + 1:
        return None
    total = float(ring_cum[s, end_bin % nb] - ring_cum[s, start % nb])
    idx = np.arange(start + 1, end_bin + 1) % nb
    return total, int(np.count_nonzero(ring_good[s, idx]))


class ShiftYieldTracker:
    def __init__(
        self,
        config: LineConfig,
        feed: int,
        black_mass: int,
        sigma_bm: float,
        feed_estimate: Callable[[int, int, float], tuple[float, float]],
    ) -> None:
        """`feed_estimate(end_bin, length, belt_t) -> (feed_t, sigma_rel)`: the pipeline's
        feed over a span of the grid, reconciled to the feed reference where it has one."""
        y = config.yield_
        self.calendar = ShiftCalendar(y.shift_h, y.shift_start, y.timezone)
        self.bin_s = y.bin_s
        self.delay_bins = round(y.transport_delay_min * 60 / y.bin_s)
        self.min_coverage = y.min_coverage
        self.basis = y.basis
        self.delay_min = y.transport_delay_min
        self.sigma_bm = sigma_bm
        self.feed_estimate = feed_estimate
        self.feed = feed
        self.black_mass = black_mass
        self._open: Shift | None = None

    @property
    def shift_bins(self) -> int:
        """Grid intervals in a (regular) shift; the rings must hold this plus the delay."""
        return round(self.calendar.shift_h * 3600 / self.bin_s)

    def update(
        self,
        ring_cum: np.ndarray,
        ring_good: np.ndarray,
        ring_head: np.ndarray,
        ring_first: np.ndarray,
        inputs_good: bool,
        delay_bins: int | None = None,
    ) -> tuple[YieldFigure | None, list[YieldFigure]]:
        """(running figure of the current shift, final figures of shifts completed since last call).

        `delay_bins`: the delay in use now (the pipeline's estimate when the configured one is
        wrong); default the configured delay."""
        if delay_bins is not None:
            self.delay_bins = delay_bins
            self.delay_min = delay_bins * self.bin_s / 60.0
        if (
            ring_head[self.black_mass] < ring_first[self.black_mass]
            or ring_head[self.feed] < ring_first[self.feed]
        ):
            return None, []
        end = int(min(ring_head[self.black_mass], ring_head[self.feed] + self.delay_bins))
        t_end = end * self.bin_s
        current = self.calendar.shift_at(t_end - 1e-6)
        finals: list[YieldFigure] = []
        if self._open is None:
            self._open = current
        while self._open.end <= t_end:
            done = self._open
            fig = self._figure(
                done, round(done.end / self.bin_s), ring_cum, ring_good, ring_head, ring_first, inputs_good
            )
            if fig is not None:
                finals.append(fig)
            self._open = self.calendar.shift_at(done.end)
        running = self._figure(
            self._open, end, ring_cum, ring_good, ring_head, ring_first, inputs_good, final=False
        )
        return running, finals

    def _figure(
        self,
        shift: Shift,
        end: int,
        ring_cum: np.ndarray,
        ring_good: np.ndarray,
        ring_head: np.ndarray,
        ring_first: np.ndarray,
        inputs_good: bool,
        final: bool = True,
    ) -> YieldFigure | None:
        start = round(shift.start / self.bin_s)
        full = round(shift.end / self.bin_s) - start
        length = end - start
        bm = window_totals(ring_cum, ring_good, ring_head, ring_first, self.black_mass, end, length)
        feed = window_totals(
            ring_cum, ring_good, ring_head, ring_first, self.feed, end - self.delay_bins, length
        )
        if bm is None or feed is None:
            if not final:
                return None
            # The shift's start is not in the rings (the gateway started mid-shift): no final figure
            # can be given for it; say so with a BAD figure rather than publish a partial as final.
            return YieldFigure(
                t=shift.end,
                value=None,
                uncertainty=None,
                quality=Quality.BAD,
                coverage=0.0,
                window_h=(shift.end - shift.start) / 3600,
                covered_h=0.0,
                delay_min=self.delay_min,
                basis=self.basis,
                feed_t=0.0,
                black_mass_t=0.0,
                horizon="shift",
                label=shift.label,
                final=True,
            )
        (bm_t, bm_good), (f_t, f_good) = bm, feed
        # A final figure answers for the whole shift; a running one for the part elapsed so far.
        coverage = min(bm_good, f_good) / (full if final else length)
        sigma_feed = math.nan
        if f_t > 0:
            f_t, sigma_feed = self.feed_estimate(end - self.delay_bins, length, f_t)
        value = bm_t / f_t if f_t > 0 else None
        if value is None:
            quality = Quality.BAD
        elif coverage >= self.min_coverage and (inputs_good or final):
            quality = Quality.GOOD
        else:
            quality = Quality.UNCERTAIN
        return YieldFigure(
            t=end * self.bin_s,
            value=value,
            uncertainty=None if value is None else 2.0 * value * math.hypot(sigma_feed, self.sigma_bm),
            quality=quality,
            coverage=coverage,
            window_h=(shift.end - shift.start) / 3600,
            covered_h=length * self.bin_s / 3600,
            delay_min=self.delay_min,
            basis=self.basis,
            feed_t=f_t,
            black_mass_t=bm_t,
            horizon="shift",
            label=shift.label,
            final=final,
        )


__all__ = ["ShiftYieldTracker", "window_totals"]
