"""numba kernels of the signal pipeline: pure array functions, no I/O, one call per tick.

`condition_batch` checks every sample of a tick against its tag's range and keeps per-tag
latest state. `accumulate_streams` turns the balance streams' samples (totalizers or rates)
into cumulative mass on a fixed plant-time grid of `bin_s` seconds, held in a ring; each grid
interval carries a `good` flag. `window_yield` reads two windows off those rings: black mass
over (end-W, end] and feed over the same window shifted back by the transport delay.

Every kernel has a plain numpy reference in `gateway.kernels_reference`; tests hold them equal.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOOD = 0
UNCERTAIN = 1
BAD = 2
STALE = 3

KIND_TOTAL = 0
KIND_RATE = 1
NO_STREAM = -1

# A totalizer delta may exceed max_rate x interval by one display step (1 kg) before it is
# called implausible: the reading is quantised, the rate is not.
IMPLAUSIBLE_SLACK_T = 0.001

# Sample quality after conditioning, beyond the Quality codes: a sample older than the tag's
# latest is dropped (totals must move forward in time) and marked with this code.
DROPPED_OUT_OF_ORDER = 127


@njit(cache=True)
def condition_batch(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    last_t: np.ndarray,
    last_value: np.ndarray,
    last_quality: np.ndarray,
    counters: np.ndarray,
) -> np.ndarray:
    """Quality-check a tick's samples and update per-tag latest state.

    Returns the conditioned quality per sample. A GOOD or UNCERTAIN sample that is not finite
    or lies outside [lo, hi] of its tag becomes BAD. A sample older than its tag's latest is
    marked DROPPED_OUT_OF_ORDER and leaves the state alone.
    counters[k, 0] samples seen, [k, 1] out of range or non-finite, [k, 2] out of order.
    """
    n = tag.shape[0]
    out = np.empty(n, np.int8)
    for i in range(n):
        k = tag[i]
        counters[k, 0] += 1
        if t[i] < last_t[k]:
            counters[k, 2] += 1
            out[i] = DROPPED_OUT_OF_ORDER
            continue
        q = quality[i]
        v = value[i]
        if q <= UNCERTAIN and (not np.isfinite(v) or v < lo[k] or v > hi[k]):
            q = BAD
            counters[k, 1] += 1
        out[i] = q
        last_t[k] = t[i]
        last_value[k] = v
        last_quality[k] = q
    return out


@njit(cache=True)
def _fill_bins(
    s: int,
    t0: float,
    c0: float,
    t1: float,
    c1: float,
    good: bool,
    bin_s: float,
    ring_cum: np.ndarray,
    ring_good: np.ndarray,
    ring_head: np.ndarray,
    ring_first: np.ndarray,
) -> None:
    """Write cumulative mass at every grid boundary in (t0, t1], linearly interpolated."""
    nb = ring_cum.shape[1]
    b_lo = np.int64(np.floor(t0 / bin_s)) + 1
    b_hi = np.int64(np.floor(t1 / bin_s))
    if b_hi < b_lo:
        return
    if b_hi - b_lo + 1 > nb:
        # A gap longer than the ring: older boundaries would be overwritten anyway.
        b_lo = b_hi - nb + 1
        ring_first[s] = b_lo
    span = t1 - t0
    for b in range(b_lo, b_hi + 1):
        tb = b * bin_s
        frac = (tb - t0) / span if span > 0 else 1.0
        j = b % nb
        ring_cum[s, j] = c0 + (c1 - c0) * frac
        ring_good[s, j] = good
    ring_head[s] = b_hi
    if ring_first[s] < b_hi - nb + 1:
        ring_first[s] = b_hi - nb + 1


@njit(cache=True)
def accumulate_streams(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    cond_quality: np.ndarray,
    tag_stream: np.ndarray,
    tag_kind: np.ndarray,
    tag_scale: np.ndarray,
    tag_modulus: np.ndarray,
    tag_max_rate: np.ndarray,
    bin_s: float,
    max_gap_s: float,
    st_last_t: np.ndarray,
    st_last_raw: np.ndarray,
    st_last_q: np.ndarray,
    st_cum: np.ndarray,
    st_events: np.ndarray,
    ring_cum: np.ndarray,
    ring_good: np.ndarray,
    ring_head: np.ndarray,
    ring_first: np.ndarray,
) -> None:
    """Advance the balance streams' cumulative mass with a tick's conditioned samples.

    Totals: the increment is the totalizer delta, never invented mass:
    - a negative delta on a totalizer with a modulus (tag_modulus > 0, in tonnes) is a rollover:
      the delta plus the modulus, exact (st_events[s, 0]);
    - any other negative delta is a reset: the counter restarted from zero, so what it shows
      now accumulated since, if the interval is no longer than max_gap_s (else nothing is
      counted); the interval is not good (st_events[s, 1]);
    - a delta above tag_max_rate (t/h) over the interval (+1 kg for display resolution) is
      implausible (a glitch, a rebase): not counted, not good (st_events[s, 2]).
    Rates: trapezoidal integration. A stretch longer than max_gap_s between two usable samples,
    or touching an UNCERTAIN sample, is marked not good; its mass still counts (totalizers lose
    none across a gap). BAD, STALE and dropped samples are not usable and leave the state alone.
    st_last_t is NaN until the stream's first usable sample.
    """
    n = tag.shape[0]
    for i in range(n):
        k = tag[i]
        s = tag_stream[k]
        if s < 0:
            continue
        q = cond_quality[i]
        if q > UNCERTAIN:
            continue
        ti = t[i]
        raw = value[i] * tag_scale[k]
        if np.isnan(st_last_t[s]):
            st_last_t[s] = ti
            st_last_raw[s] = raw
            st_last_q[s] = q
            ring_first[s] = np.int64(np.floor(ti / bin_s)) + 1
            ring_head[s] = ring_first[s] - 1
            continue
        dt = ti - st_last_t[s]
        if dt <= 0.0:
            continue
        good = dt <= max_gap_s and q == GOOD and st_last_q[s] == GOOD
        if tag_kind[k] == KIND_TOTAL:
            d = raw - st_last_raw[s]
            if d < 0.0 and tag_modulus[k] > 0.0 and d + tag_modulus[k] >= 0.0:
                d += tag_modulus[k]
                st_events[s, 0] += 1
            elif d < 0.0:
                st_events[s, 1] += 1
                d = raw if dt <= max_gap_s else 0.0
                good = False
            if d > tag_max_rate[k] * dt / 3600.0 + IMPLAUSIBLE_SLACK_T:
                st_events[s, 2] += 1
                d = 0.0
                good = False
        else:
            d = 0.5 * (raw + st_last_raw[s]) * dt / 3600.0
            if d < 0.0:
                d = 0.0
        c0 = st_cum[s]
        c1 = c0 + d
        _fill_bins(s, st_last_t[s], c0, ti, c1, good, bin_s, ring_cum, ring_good, ring_head, ring_first)
        st_cum[s] = c1
        st_last_t[s] = ti
        st_last_raw[s] = raw
        st_last_q[s] = q


@njit(cache=True)
def window_yield(
    ring_cum: np.ndarray,
    ring_good: np.ndarray,
    ring_head: np.ndarray,
    ring_first: np.ndarray,
    feed: int,
    black_mass: int,
    window_bins: int,
    delay_bins: int,
) -> np.ndarray:
    """Rolling yield from the rings, as [end_bin, length_bins, feed_t, bm_t, cov_feed, cov_bm].

    The window ends at the newest boundary for which both the black-mass total and the
    delay-shifted feed total exist. While history is shorter than the window, the longest
    window both streams cover is used (length < window_bins), and coverage counts against the
    full window, so a filling window is never GOOD. length 0 means no figure yet.
    """
    out = np.zeros(6)
    nb = ring_cum.shape[1]
    if ring_head[feed] < ring_first[feed] or ring_head[black_mass] < ring_first[black_mass]:
        return out
    end = min(ring_head[black_mass], ring_head[feed] + delay_bins)
    start_bm = max(end - window_bins, ring_first[black_mass])
    start_f = max(end - delay_bins - window_bins, ring_first[feed])
    length = min(end - start_bm, end - delay_bins - start_f)
    if length <= 0:
        out[0] = end
        return out
    fe = end - delay_bins
    bm_t = ring_cum[black_mass, end % nb] - ring_cum[black_mass, (end - length) % nb]
    f_t = ring_cum[feed, fe % nb] - ring_cum[feed, (fe - length) % nb]
    good_bm = 0
    good_f = 0
    for j in range(1, length + 1):
        if ring_good[black_mass, (end - length + j) % nb]:
            good_bm += 1
        if ring_good[feed, (fe - length + j) % nb]:
            good_f += 1
    out[0] = end
    out[1] = length
    out[2] = f_t
    out[3] = bm_t
    out[4] = good_f / window_bins
    out[5] = good_bm / window_bins
    return out


@njit(cache=True)
def recent_rate(
    ring_cum: np.ndarray, ring_head: np.ndarray, ring_first: np.ndarray, s: int, bins: int, bin_s: float
) -> float:
    """Mean flow in t/h over the newest `bins` grid intervals of stream s (NaN without history)."""
    nb = ring_cum.shape[1]
    head = ring_head[s]
    start = max(head - bins, ring_first[s])
    if head <= start:
        return np.nan
    return (ring_cum[s, head % nb] - ring_cum[s, start % nb]) / ((head - start) * bin_s) * 3600.0
