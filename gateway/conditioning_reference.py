"""Plain numpy references for the conditioning kernels in `gateway.conditioning`.

Each computes from the whole history of ONE tag (or delay-line stream) at once, with vector
operations over the history instead of streaming state: the Hampel medians come from sorting
every window of a sliding-window view, totals from cumulative sums of vectorised increments.
Only the low-pass recursion is a loop. A test that holds these equal to the kernels checks
the streaming logic (ring buffers, sorted-window updates, carried state), not just the
compiler. Slow; for tests and benchmarks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gateway.conditioning import (
    CHANNEL_RATE,
    CHANNEL_TOTALIZER,
    CLAMPED,
    GAP,
    IMPLAUSIBLE,
    MAD_TO_SIGMA,
    OUT_OF_ORDER,
    RATE_HEADROOM,
    RESET,
    ROLLOVER,
    SPIKE,
    UNUSABLE,
    TagConditioning,
)
from gateway.samples import Quality


@dataclass(frozen=True)
class ChainReference:
    """Outputs of the chain for one tag's whole history, aligned with its samples."""

    filtered: np.ndarray  # NaN where the sample is not used
    despiked: np.ndarray
    flags: np.ndarray  # uint8
    total_after: np.ndarray  # the tag's cumulative total after each sample

    @property
    def total(self) -> float:
        return float(self.total_after[-1]) if len(self.total_after) else 0.0


def used_samples(t: np.ndarray, value: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(usable, used): usable = GOOD/UNCERTAIN with finite time and value; used = usable and
    later than every earlier usable sample (a dropped sample never raised the bar, since it
    was not later than a used one)."""
    usable = (
        ((quality == Quality.GOOD) | (quality == Quality.UNCERTAIN)) & np.isfinite(value) & np.isfinite(t)
    )
    t_usable = np.where(usable, t, -np.inf)
    latest_before = np.maximum.accumulate(np.concatenate(([-np.inf], t_usable)))[:-1]
    return usable, usable & (t > latest_before)


def clamp_reference(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(clamped values, clamped mask)."""
    return np.clip(x, lo, hi), (x < lo) | (x > hi)


def hampel_reference(
    x: np.ndarray, segment: np.ndarray, w: int, n_sigma: float, s_floor: float, s_floor_rel: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Causal Hampel filter: (output, spike mask). Sample i is judged against x[i-w:i] when
    those all lie in its segment (segments restart the window, e.g. after a gap)."""
    n = len(x)
    spike = np.zeros(n, bool)
    if w == 0 or n <= w:
        return x.copy(), spike
    windows = np.sort(sliding_window_view(x, w)[:-1], axis=1)  # row j: previous w of x[j+w]
    median = windows[:, w // 2]
    mad = np.sort(np.abs(windows - median[:, None]), axis=1)[:, w // 2]
    scale = np.maximum(np.maximum(MAD_TO_SIGMA * mad, s_floor), s_floor_rel * np.abs(median))
    judged = x[w:]
    full = segment[w:] == segment[:-w]  # the whole window lies in the sample's segment
    spike[w:] = full & (np.abs(judged - median) > n_sigma * scale)
    out = x.copy()
    out[w:] = np.where(spike[w:], median, judged)
    return out, spike


def lowpass_reference(t: np.ndarray, x: np.ndarray, tau: float, restart: np.ndarray) -> np.ndarray:
    """First-order low-pass, restarted at y = x where `restart` is set."""
    if tau == 0.0:
        return x.copy()
    dt = np.diff(t, prepend=t[:1])
    alpha = (1.0 - np.exp(-dt / tau)).tolist()
    y = np.empty(len(x))
    prev = 0.0
    for i, (a, xi, r) in enumerate(zip(alpha, x.tolist(), restart.tolist(), strict=True)):
        prev = xi if r else prev + a * (xi - prev)
        y[i] = prev
    return y


def rate_increments(t: np.ndarray, x: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Trapezoid mass of each interval of a rate channel (unit/h); 0 across a gap."""
    inc = 0.5 * (x[1:] + x[:-1]) * np.diff(t) / 3600.0
    return np.where(gap[1:], 0.0, inc)


def counter_increments(
    t: np.ndarray, raw: np.ndarray, modulus: float, max_rate: float, quantum: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mass counted by a totalizer in each interval, and each interval's flags."""
    delta = np.diff(raw)
    limit = max_rate * np.diff(t) / 3600.0 * RATE_HEADROOM + quantum
    negative = delta < 0
    rollover = negative & (modulus > 0)
    reset = negative & ~(modulus > 0)
    delta = np.where(rollover, delta + modulus, delta)
    restarted = raw[1:]
    delta = np.where(reset, np.where((restarted >= 0) & (restarted <= limit), restarted, 0.0), delta)
    implausible = delta > limit
    delta = np.where(implausible, 0.0, delta)
    flags = rollover * ROLLOVER | reset * RESET | implausible * IMPLAUSIBLE
    return delta, flags.astype(np.uint8)


def chain_reference(
    t: np.ndarray, value: np.ndarray, quality: np.ndarray, p: TagConditioning
) -> ChainReference:
    """The chain's outputs for one tag's whole sample history (see `condition_chain`)."""
    n = len(t)
    usable, used = used_samples(t, value, quality)
    flags = np.zeros(n, np.uint8)
    flags[~usable] = UNUSABLE
    flags[usable & ~used] = OUT_OF_ORDER
    tu, xu = t[used], value[used]
    m = len(tu)

    uflags = np.zeros(m, np.uint8)
    gap = np.zeros(m, bool)
    gap[1:] = np.diff(tu) > p.max_gap_s
    uflags |= gap * np.uint8(GAP)
    despiked = xu.copy()
    if p.channel != CHANNEL_TOTALIZER:
        despiked, clamped = clamp_reference(xu, p.clamp_lo, p.clamp_hi)
        despiked, spike = hampel_reference(
            despiked, np.cumsum(gap), p.window, p.n_sigma, p.s_floor, p.s_floor_rel
        )
        uflags |= clamped * np.uint8(CLAMPED) | spike * np.uint8(SPIKE)
    restart = gap.copy()
    restart[:1] = True
    filtered = lowpass_reference(tu, despiked, p.tau_s, restart)

    inc = np.zeros(max(m - 1, 0))
    if m > 1 and p.channel == CHANNEL_RATE:
        inc = rate_increments(tu, despiked, gap)
    elif m > 1 and p.channel == CHANNEL_TOTALIZER:
        inc, counter_flags = counter_increments(tu, xu, p.modulus, p.max_rate, p.quantum)
        uflags[1:] |= counter_flags
    total_used = np.cumsum(np.concatenate(([0.0], inc)))

    out_filtered = np.full(n, np.nan)
    out_despiked = np.full(n, np.nan)
    out_filtered[used] = filtered
    out_despiked[used] = despiked
    flags[used] = uflags
    # Total after each sample = total after the latest used sample at or before it.
    latest_used = np.cumsum(used) - 1
    total_after = np.zeros(n)
    seen = latest_used >= 0
    total_after[seen] = total_used[latest_used[seen]]
    return ChainReference(out_filtered, out_despiked, flags, total_after)


def delay_reference(
    bin_index: np.ndarray, value: np.ndarray, n_bins: int, at_bin: int, delay_bins: float
) -> float:
    """A delay line stream's value read at `at_bin - delay_bins` after all pushes (see `delay_read`)."""
    if len(bin_index) == 0:
        return float("nan")
    first = bin_index[0]
    newest_before = np.maximum.accumulate(np.concatenate(([first], bin_index)))[:-1]
    kept = (bin_index > newest_before - n_bins) & (bin_index >= first)
    head = int(bin_index.max())
    oldest = max(int(first), head - n_bins + 1)
    grid = np.full(head - oldest + 1, np.nan)
    b, v = bin_index[kept], value[kept]
    in_range = b >= oldest
    b, v = b[in_range], v[in_range]
    # The last write of each bin wins: the first occurrence in the reversed order.
    bins_last, idx_rev = np.unique(b[::-1], return_index=True)
    grid[bins_last - oldest] = v[::-1][idx_rev]
    position = at_bin - delay_bins
    if position < oldest or position > head:
        return float("nan")
    if position == np.floor(position):
        return float(grid[int(position) - oldest])
    return float(np.interp(position, np.arange(oldest, head + 1), grid))
