"""Which samples are spikes: a centred test, one sample late.

The causal Hampel filter of the conditioning chain (gateway.conditioning) judges a sample
against the samples before it only, so it cannot tell a spike from the first sample of a real
step, nor see a spike on a ramp or right after a step (its median still lags). The verdict
here waits for the tag's next used reading, which may come in a later tick (the state carries
the open case), and looks at both sides of the candidate x_i. With the noise scale s below, x_i
is a spike when the next reading x_(i+1) lies more than n_sigma * s from it AND

- level: so does m, the median of the w readings before x_i, on the same side, and the
  reading before, x_(i-1), lies at least NEIGHBOUR_SHARE of that bar away on that side too (a
  spike stands apart from both neighbours; the second reading of a plant dip recovering
  steeply sits below the median and below its next reading, but well above the one before); or
- slope: so does the reading before, x_(i-1), on the same side (a spike on a ramp: there the
  median lags by the ramp, not by a spike),

and x_(i+1) comes back at least RETURN_SHARE of the way from x_i: a spike returns, while a
plant dip that recovers over several readings does not. A step has its next reading on the new
level, so it is no spike; a spike just after a step stands out from the new level on both sides.

Scale: s = max(1.4826 * MAD / sqrt(2), s_floor, s_floor_rel * |m|, s_floor_rel * min(|x_(i-1)|,
|x_(i+1)|)), the MAD taken over the last NOISE_WINDOW differences of consecutive readings before
x_i: differences see the noise and not the level, so a step or a ramp in the window does not
inflate it (a step is one outlying difference, a ramp shifts them all alike), and NOISE_WINDOW
of them give a steadier figure than the w levels of the chain's window. The relative floor is
also taken at the neighbours' level: just after a belt starts from standstill the windows hold
zeros (no noise, median 0), while the readings around x_i carry the noise of their own level.

Readings are judged as they came (unclamped: the chain's clamp and replacement concern the
value sent on). Only tags with a Hampel window are judged, with the chain's w, n_sigma,
s_floor and s_floor_rel. Nothing is judged until both windows are full; a GAP (flagged by the
chain) empties them and leaves the reading before it without a verdict: its next reading,
after the outage, is no neighbour. Samples the chain did not use are skipped.

`confirm_spikes` is the streaming kernel; `confirm_spikes_reference` computes the same from a
whole history with array operations (the tests hold them equal in any chunking).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from gateway.conditioning import (
    GAP,
    K_WINDOW,
    MAD_TO_SIGMA,
    MAX_WINDOW,
    OUT_OF_ORDER,
    P_N_SIGMA,
    P_S_FLOOR,
    P_S_FLOOR_REL,
    UNUSABLE,
    ChainParams,
    median_abs_deviation,
    window_insert,
    window_slide,
)

NOT_USED = UNUSABLE | OUT_OF_ORDER
# Differences of consecutive readings behind the noise scale (odd, for the median).
NOISE_WINDOW = MAX_WINDOW
# A spike's next reading comes back at least this share of the way.
RETURN_SHARE = 0.5
# In the level test, the reading before stands at least this share of the bar away.
NEIGHBOUR_SHARE = 0.5
SQRT2 = math.sqrt(2.0)

# Columns of SpikeConfirmation.scalars (float64), one row per tag: the open case.
C_X, C_T, C_MEDIAN, C_SCALE, C_PREV, C_OPEN = range(6)
N_CASE_SCALARS = 6
# Columns of SpikeConfirmation.pos (int64): ring slot of the oldest value and values held, of
# the level window, then of the difference window.
L_HEAD, L_FILL, D_HEAD, D_FILL = range(4)


@njit(cache=True, inline="always")
def _push(ring: np.ndarray, srt: np.ndarray, pos: np.ndarray, k: int, w: int, head: int, x: float) -> None:
    """Add x to tag k's window of its last w values (pos columns head, head + 1)."""
    held = pos[k, head + 1]
    if held < w:
        ring[k, held] = x
        window_insert(srt, k, held, x)
        pos[k, head + 1] = held + 1
        return
    oldest = pos[k, head]
    old = ring[k, oldest]
    ring[k, oldest] = x
    pos[k, head] = oldest + 1 if oldest + 1 < w else 0
    window_slide(ring, srt, k, w, old, x)


@njit(cache=True, inline="always")
def _is_spike(d_right: float, d_other: float, bar: float) -> bool:
    """x_i stands out by more than `bar` from the next reading (d_right = x_i - x_(i+1)) and
    from a reference (d_other = x_i - ref) on the same side, and the next reading comes back."""
    return (
        d_right * d_other > 0.0
        and abs(d_other) > bar
        and abs(d_right) > bar
        and abs(d_right) >= RETURN_SHARE * abs(d_other)
    )


@njit(cache=True)
def confirm_spikes(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    flags: np.ndarray,
    kind: np.ndarray,
    par: np.ndarray,
    sc: np.ndarray,
    level_ring: np.ndarray,
    level_srt: np.ndarray,
    diff_ring: np.ndarray,
    diff_srt: np.ndarray,
    pos: np.ndarray,
    confirmed_t: np.ndarray,
    confirmed_tag: np.ndarray,
) -> int:
    """Walk one tick's samples in order; write the times and tags of confirmed spikes into
    `confirmed_t` / `confirmed_tag` (as long as the batch) and return how many.

    kind/par are `ChainParams` arrays and `flags` the chain's flags of the same samples;
    sc, the rings and pos are the `SpikeConfirmation` state, updated in place. The open case
    of tag k: its last reading (C_X at C_T), the median of the w readings before it and the
    scale (C_MEDIAN, C_SCALE; NaN until the windows are full) and the reading before it
    (C_PREV; NaN if none); C_OPEN is 0 until a reading opens a case, and after a GAP."""
    for k in range(kind.shape[0]):
        if kind[k, K_WINDOW] > level_ring.shape[1] or diff_ring.shape[1] < NOISE_WINDOW:
            raise ValueError("window larger than the state's window capacity")
    n_out = 0
    for i in range(tag.shape[0]):
        f = flags[i]
        if f & NOT_USED:
            continue
        k = tag[i]
        w = kind[k, K_WINDOW]
        if w == 0:
            continue
        x = value[i]
        if f & GAP:
            pos[k, L_HEAD] = 0
            pos[k, L_FILL] = 0
            pos[k, D_HEAD] = 0
            pos[k, D_FILL] = 0
            sc[k, C_OPEN] = 0.0
        elif sc[k, C_OPEN] != 0.0:
            # The verdict on the open case; a NaN median, scale or step fails its test.
            last = sc[k, C_X]
            d_right = last - x
            prev = sc[k, C_PREV]
            d_step = last - prev
            scale = sc[k, C_SCALE]
            if d_step == d_step and scale == scale:  # the relative floor at the neighbours' level
                scale = max(scale, par[k, P_S_FLOOR_REL] * min(abs(prev), abs(x)))
            bar = par[k, P_N_SIGMA] * scale
            d_level = last - sc[k, C_MEDIAN]
            apart = d_step * d_level > 0.0 and abs(d_step) > NEIGHBOUR_SHARE * bar
            if (apart and _is_spike(d_right, d_level, bar)) or _is_spike(d_right, d_step, bar):
                confirmed_t[n_out] = sc[k, C_T]
                confirmed_tag[n_out] = k
                n_out += 1

        # This reading opens the next case, judged on the windows before it.
        if pos[k, D_FILL] == NOISE_WINDOW:  # then the level window is full too
            m = level_srt[k, w // 2]
            md = diff_srt[k, NOISE_WINDOW // 2]
            noise = MAD_TO_SIGMA * median_abs_deviation(diff_srt, k, NOISE_WINDOW, md) / SQRT2
            sc[k, C_MEDIAN] = m
            sc[k, C_SCALE] = max(max(noise, par[k, P_S_FLOOR]), par[k, P_S_FLOOR_REL] * abs(m))
        else:
            sc[k, C_MEDIAN] = np.nan
            sc[k, C_SCALE] = np.nan
        if sc[k, C_OPEN] != 0.0:
            sc[k, C_PREV] = sc[k, C_X]
            _push(diff_ring, diff_srt, pos, k, NOISE_WINDOW, D_HEAD, x - sc[k, C_X])
        else:
            sc[k, C_PREV] = np.nan
        _push(level_ring, level_srt, pos, k, w, L_HEAD, x)
        sc[k, C_X] = x
        sc[k, C_T] = t[i]
        sc[k, C_OPEN] = 1.0
    return n_out


def _before(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(median, MAD) of x[i-w:i] for each i, NaN where i < w: every sliding window sorted."""
    n = len(x)
    median = np.full(n, np.nan)
    mad = np.full(n, np.nan)
    if n > w:
        windows = np.sort(sliding_window_view(x, w)[:-1], axis=1)
        median[w:] = windows[:, w // 2]
        mad[w:] = np.sort(np.abs(windows - median[w:, None]), axis=1)[:, w // 2]
    return median, mad


def _spikes_in_run(x: np.ndarray, w: int, n_sigma: float, floor: float, floor_rel: float) -> np.ndarray:
    """Spike mask of one gap-free run of readings (the last has no verdict yet)."""
    spike = np.zeros(len(x), bool)
    if len(x) < 2:
        return spike
    median, _ = _before(x, w)
    step_in = np.concatenate(([np.nan], np.diff(x)))  # x[i] - x[i-1]
    # The differences before x[i] are step_in[1:i]: index i - 1 of step_in[1:].
    _, diff_mad = _before(step_in[1:], NOISE_WINDOW)
    noise = np.concatenate(([np.nan], MAD_TO_SIGMA * diff_mad / SQRT2))
    scale = np.maximum(np.maximum(noise, floor), floor_rel * np.abs(median))  # NaN: no verdict
    neighbours = np.minimum(np.abs(x[:-2]), np.abs(x[2:]))  # of x[1:-1]
    local = np.concatenate(([0.0], floor_rel * neighbours))  # x[0] has no reading before
    bar = n_sigma * np.maximum(scale[:-1], local)
    d_right = x[:-1] - x[1:]
    d_level = x[:-1] - median[:-1]
    d_step = step_in[:-1]

    def stands_out(d_other: np.ndarray) -> np.ndarray:
        return (
            (d_right * d_other > 0)
            & (np.abs(d_other) > bar)
            & (np.abs(d_right) > bar)
            & (np.abs(d_right) >= RETURN_SHARE * np.abs(d_other))
        )

    apart = (d_step * d_level > 0) & (np.abs(d_step) > NEIGHBOUR_SHARE * bar)
    spike[:-1] = (apart & stands_out(d_level)) | stands_out(d_step)
    return spike


def confirm_spikes_reference(
    tag: np.ndarray, t: np.ndarray, value: np.ndarray, flags: np.ndarray, params: ChainParams
) -> set[tuple[int, float]]:
    """(tag, time) of every confirmed spike in a whole history."""
    out: set[tuple[int, float]] = set()
    used = (flags & NOT_USED) == 0
    for k in np.unique(tag[used]):
        p = params.tag(int(k))
        if p.window == 0:
            continue
        idx = np.flatnonzero(used & (tag == k))
        run_of = np.cumsum((flags[idx] & GAP) != 0)
        for r in np.unique(run_of):
            run = idx[run_of == r]
            spike = _spikes_in_run(value[run], p.window, p.n_sigma, p.s_floor, p.s_floor_rel)
            out |= {(int(k), float(x)) for x in t[run[spike]]}
    return out


class SpikeConfirmation:
    """Per-tag state of `confirm_spikes` for the tags of `params` (the chain's parameters)."""

    def __init__(self, params: ChainParams) -> None:
        n_tags = params.n_tags
        self.params = params
        self.scalars = np.zeros((n_tags, N_CASE_SCALARS))
        self.level_ring = np.zeros((n_tags, max(params.window_capacity, 1)))
        self.level_sorted = np.zeros_like(self.level_ring)
        self.diff_ring = np.zeros((n_tags, NOISE_WINDOW))
        self.diff_sorted = np.zeros_like(self.diff_ring)
        self.pos = np.zeros((n_tags, 4), np.int64)
        self.confirmed = np.zeros(n_tags, np.int64)

    def update(
        self, tag: np.ndarray, t: np.ndarray, value: np.ndarray, flags: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(tag, time) arrays of the spikes confirmed by this tick's samples; `flags` are the
        conditioning chain's flags of the same samples."""
        out_t = np.empty(len(tag))
        out_k = np.empty(len(tag), np.int64)
        n = confirm_spikes(
            np.ascontiguousarray(tag, np.int64),
            np.ascontiguousarray(t, np.float64),
            np.ascontiguousarray(value, np.float64),
            flags,
            self.params.kind,
            self.params.values,
            self.scalars,
            self.level_ring,
            self.level_sorted,
            self.diff_ring,
            self.diff_sorted,
            self.pos,
            out_t,
            out_k,
        )
        np.add.at(self.confirmed, out_k[:n], 1)
        return out_k[:n], out_t[:n]
