"""Plain numpy references for the numba kernels in `gateway.kernels`.

They compute the same results from a whole history at once, with vector operations instead
of streaming state, so a test that holds them equal checks the streaming logic, not just the
compiler. Slow; for tests and benchmarks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.kernels import BAD, DROPPED_OUT_OF_ORDER, GOOD, IMPLAUSIBLE_SLACK_T, KIND_TOTAL, UNCERTAIN


def condition_reference(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    initial_last_t: np.ndarray,
) -> np.ndarray:
    """Conditioned quality per sample (see `condition_batch`)."""
    out = quality.astype(np.int8).copy()
    bad_value = ~np.isfinite(value) | (value < lo[tag]) | (value > hi[tag])
    out[(quality <= UNCERTAIN) & bad_value] = BAD
    for k in np.unique(tag):
        idx = np.flatnonzero(tag == k)
        # Latest accepted time before each sample = running max of the tag's earlier times.
        before = np.maximum.accumulate(np.concatenate(([initial_last_t[k]], t[idx])))[:-1]
        out[idx[t[idx] < before]] = DROPPED_OUT_OF_ORDER
    return out


@dataclass(frozen=True)
class StreamGrid:
    """Cumulative mass of one stream at grid boundaries b*bin_s, and each interval's flag."""

    first: int  # boundary index of cum[0]
    cum: np.ndarray
    good: np.ndarray  # good[i]: interval ending at boundary first+i

    @property
    def head(self) -> int:
        return self.first + len(self.cum) - 1


def stream_grid_reference(
    t: np.ndarray,
    value: np.ndarray,
    cond_quality: np.ndarray,
    kind: int,
    scale: float,
    bin_s: float,
    max_gap_s: float,
    modulus_t: float = 0.0,
    max_rate_tph: float = np.inf,
) -> StreamGrid:
    """The grid a stream's whole sample history produces (see `accumulate_streams`)."""
    usable = cond_quality <= UNCERTAIN
    tu, vu, qu = t[usable], value[usable] * scale, cond_quality[usable]
    if len(tu) == 0:
        return StreamGrid(0, np.empty(0), np.empty(0, bool))
    # A sample is used only if it is later than every earlier usable sample.
    prev_max = np.maximum.accumulate(np.concatenate(([-np.inf], tu)))[:-1]
    keep = tu > prev_max
    tk, vk, qk = tu[keep], vu[keep], qu[keep]
    dt = np.diff(tk)
    if kind == KIND_TOTAL:
        d = np.diff(vk)
        rollover = (d < 0) & (modulus_t > 0) & (d + modulus_t >= 0)
        d = np.where(rollover, d + modulus_t, d)
        reset = d < 0
        d = np.where(reset, np.where(dt <= max_gap_s, vk[1:], 0.0), d)
        implausible = d > max_rate_tph * dt / 3600.0 + IMPLAUSIBLE_SLACK_T
        d = np.where(implausible, 0.0, d)
        reset = reset | implausible
    else:
        d = np.maximum(0.5 * (vk[1:] + vk[:-1]) * dt / 3600.0, 0.0)
        reset = np.zeros(len(d), bool)
    cum = np.concatenate(([0.0], np.cumsum(d)))
    interval_good = (dt <= max_gap_s) & (qk[1:] == GOOD) & (qk[:-1] == GOOD) & ~reset
    first = int(np.floor(tk[0] / bin_s)) + 1
    last = int(np.floor(tk[-1] / bin_s))
    b = np.arange(first, last + 1)
    tb = b * bin_s
    grid_cum = np.interp(tb, tk, cum)
    # Interval (tk[j-1], tk[j]] holds boundary tb when searchsorted(left) gives j.
    j = np.searchsorted(tk, tb, side="left")
    grid_good = interval_good[np.clip(j - 1, 0, max(len(interval_good) - 1, 0))] if len(dt) else np.zeros(0)
    return StreamGrid(first, grid_cum, grid_good.astype(bool))


def window_yield_reference(
    feed: StreamGrid, black_mass: StreamGrid, window_bins: int, delay_bins: int
) -> tuple[int, int, float, float, float, float]:
    """(end_bin, length_bins, feed_t, bm_t, cov_feed, cov_bm) from whole grids (see `window_yield`)."""
    if len(feed.cum) == 0 or len(black_mass.cum) == 0:
        return (0, 0, 0.0, 0.0, 0.0, 0.0)
    end = min(black_mass.head, feed.head + delay_bins)
    length = min(window_bins, end - black_mass.first, end - delay_bins - feed.first)
    if length <= 0:
        return (end, 0, 0.0, 0.0, 0.0, 0.0)

    def seg(g: StreamGrid, stop: int) -> tuple[float, float]:
        lo, hi = stop - length - g.first, stop - g.first
        return float(g.cum[hi] - g.cum[lo]), float(np.count_nonzero(g.good[lo + 1 : hi + 1]))

    bm_t, bm_good = seg(black_mass, end)
    f_t, f_good = seg(feed, end - delay_bins)
    return (end, length, f_t, bm_t, f_good / window_bins, bm_good / window_bins)
