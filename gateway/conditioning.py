"""Streaming signal conditioning: clamp, Hampel despike, low-pass and totalize in one pass.

One call of `condition_chain` processes a whole tick's batch over many tags and updates each
tag's state in place, so a stream cut into ticks anywhere gives the same result as one call
over all of it. Per sample, in this order:

1. Usability: only GOOD/UNCERTAIN samples with finite time and value are used; a sample at or
   before its tag's last used time is dropped as out of order. Both leave the state alone.
2. Clamp (signals and rates): outside [clamp_lo, clamp_hi] -> the bound, CLAMPED.
3. Hampel (signals and rates, window w > 0): causal; x is compared with the median m of the
   tag's previous w used values (after clamping, before despiking: a spike enters the window,
   the median is robust to it). Scale s = max(1.4826 * MAD, s_floor, s_floor_rel * |m|);
   |x - m| > n_sigma * s -> output m, SPIKE. No despiking until the window holds w values; a
   GAP empties it, since the level before an outage says little about the level after it.
   This causal flag decides the value sent on; which samples are spikes is decided one sample
   later, from both sides, by `gateway.spike_confirmation`.
4. First-order low-pass of the despiked value: y += (1 - exp(-dt / tau_s)) * (x - y); the first
   sample or a gap (dt > max_gap_s, flagged GAP) restarts it at y = x; tau_s == 0 passes x.
5. Totalize. Rate channels (unit/h): trapezoid of the despiked value, value * dt / 3600; the
   mass across a gap is unknown and not integrated. Totalizer channels: delta of the raw
   counter (never clamped or despiked); a negative delta is a ROLLOVER when a modulus is set,
   else a RESET (delta = raw if the restarted count is plausible for the interval, else 0);
   a delta above max_rate * dt / 3600 * 1.5 + quantum is IMPLAUSIBLE and counts 0 (rebase,
   never invent mass). A totalizer loses no mass across a gap: its delta counts fully.

Per-tag parameters and state are bundled in `ChainParams` and `ChainState` (row per tag, one
or two cache lines each, because a real batch interleaves tags); `condition` unpacks them
for the kernel. `delay_push` / `delay_read` are a small per-stream delay line on a time grid.
Every kernel has a plain numpy reference in `gateway.conditioning_reference`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from gateway.samples import Quality

# Flags per sample (bitmask). Counter column j of `ChainState.counters` counts flag bit j.
SPIKE = 1
CLAMPED = 2
GAP = 4
ROLLOVER = 8
RESET = 16
IMPLAUSIBLE = 32
OUT_OF_ORDER = 64
UNUSABLE = 128
FLAG_NAMES = ("spike", "clamped", "gap", "rollover", "reset", "implausible", "out_of_order", "unusable")
N_COUNTERS = len(FLAG_NAMES)

CHANNEL_SIGNAL = 0
CHANNEL_RATE = 1
CHANNEL_TOTALIZER = 2

MAX_WINDOW = 21
MAD_TO_SIGMA = 1.4826
# Headroom of the totalizer plausibility limit over the tag's maximum rate.
RATE_HEADROOM = 1.5

_GOOD = int(Quality.GOOD)
_UNCERTAIN = int(Quality.UNCERTAIN)

# Columns of ChainParams.kind (int64).
K_CHANNEL, K_WINDOW = 0, 1
# Columns of ChainParams.values (float64).
N_PARAM_VALUES = 10
P_N_SIGMA, P_S_FLOOR, P_CLAMP_LO, P_CLAMP_HI, P_TAU_S, P_MAX_GAP_S, P_MODULUS, P_MAX_RATE, P_QUANTUM, P_S_FLOOR_REL = range(N_PARAM_VALUES)  # fmt: skip
# Columns of ChainState.scalars (float64): one 64-byte row per tag.
S_LAST_T, S_FILTERED, S_LAST_DESPIKED, S_LAST_RAW, S_TOTAL, S_ALPHA_DT, S_ALPHA_TAU, S_ALPHA = range(8)
N_STATE_SCALARS = 8
# Columns of ChainState.window_pos (int64).
W_HEAD, W_FILL = 0, 1


@dataclass(frozen=True, slots=True)
class TagConditioning:
    """Conditioning parameters of one tag (defaults: a plain signal passed through)."""

    channel: int = CHANNEL_SIGNAL
    window: int = 0  # Hampel window w: 0 (off) or odd <= MAX_WINDOW
    n_sigma: float = 3.0
    s_floor: float = 0.0  # lower bound of the Hampel scale, e.g. the quantisation step
    # Lower bound of the scale relative to the level (|median|): the noise of an instrument
    # whose noise is a share of its reading, so a low reading is judged on its own noise.
    s_floor_rel: float = 0.0
    clamp_lo: float = -math.inf
    clamp_hi: float = math.inf
    tau_s: float = 0.0  # low-pass time constant; 0 = no filtering
    max_gap_s: float = math.inf
    modulus: float = 0.0  # totalizer rollover modulus; 0 = none
    max_rate: float = math.inf  # totalizer plausibility limit in units/h; inf = none
    quantum: float = 0.0  # totalizer resolution added to the plausibility limit

    def __post_init__(self) -> None:
        if self.channel not in (CHANNEL_SIGNAL, CHANNEL_RATE, CHANNEL_TOTALIZER):
            raise ValueError(f"unknown channel kind {self.channel}")
        if self.window != 0 and (self.window % 2 == 0 or not 0 < self.window <= MAX_WINDOW):
            raise ValueError(f"Hampel window must be 0 or odd <= {MAX_WINDOW}, got {self.window}")
        if not (self.tau_s >= 0 and self.max_gap_s > 0 and self.modulus >= 0 and self.quantum >= 0):
            raise ValueError("tau_s, modulus and quantum must be >= 0 and max_gap_s > 0")
        if not (
            self.n_sigma > 0
            and self.s_floor >= 0
            and self.s_floor_rel >= 0
            and self.clamp_lo <= self.clamp_hi
        ):
            raise ValueError("need n_sigma > 0, s_floor >= 0, s_floor_rel >= 0 and clamp_lo <= clamp_hi")


_VALUE_FIELDS = (
    "n_sigma", "s_floor", "clamp_lo", "clamp_hi", "tau_s", "max_gap_s", "modulus", "max_rate", "quantum",
    "s_floor_rel",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChainParams:
    """Per-tag parameters as arrays: `kind[k]` = (channel, window), `values[k]` = P_* columns."""

    kind: np.ndarray  # (n_tags, 2) int64
    values: np.ndarray  # (n_tags, N_PARAM_VALUES) float64

    @staticmethod
    def new(n_tags: int, default: TagConditioning | None = None) -> ChainParams:
        """Every tag with the same parameters (change rows with `set_tag`)."""
        return ChainParams.from_tags([default or TagConditioning()] * n_tags)

    @staticmethod
    def from_tags(tags: Sequence[TagConditioning]) -> ChainParams:
        kind = np.array([(p.channel, p.window) for p in tags], np.int64).reshape(len(tags), 2)
        values = np.array([[getattr(p, f) for f in _VALUE_FIELDS] for p in tags], np.float64)
        return ChainParams(kind, values.reshape(len(tags), N_PARAM_VALUES))

    @property
    def n_tags(self) -> int:
        return int(self.kind.shape[0])

    @property
    def window_capacity(self) -> int:
        return int(self.kind[:, K_WINDOW].max(initial=0))

    def set_tag(self, k: int, p: TagConditioning) -> None:
        self.kind[k] = (p.channel, p.window)
        self.values[k] = [getattr(p, f) for f in _VALUE_FIELDS]

    def tag(self, k: int) -> TagConditioning:
        floats = {f: float(v) for f, v in zip(_VALUE_FIELDS, self.values[k], strict=True)}
        return TagConditioning(
            channel=int(self.kind[k, K_CHANNEL]), window=int(self.kind[k, K_WINDOW]), **floats
        )


@dataclass(frozen=True, slots=True)
class ChainState:
    """Per-tag streaming state, updated in place by `condition_chain`."""

    scalars: np.ndarray  # (n_tags, N_STATE_SCALARS) float64, S_* columns
    window_ring: np.ndarray  # (n_tags, capacity) float64: the last w values in arrival order
    window_sorted: np.ndarray  # (n_tags, capacity) float64: the same values, sorted
    window_pos: np.ndarray  # (n_tags, 2) int64: ring slot of the oldest value, values held
    counters: np.ndarray  # (n_tags, N_COUNTERS) int64: samples per flag bit

    @staticmethod
    def new(n_tags: int, window_capacity: int = MAX_WINDOW) -> ChainState:
        scalars = np.zeros((n_tags, N_STATE_SCALARS))
        scalars[:, S_LAST_T] = -np.inf  # no sample yet
        scalars[:, S_FILTERED] = np.nan
        scalars[:, S_ALPHA_DT] = np.nan  # empty low-pass coefficient cache
        return ChainState(
            scalars=scalars,
            window_ring=np.zeros((n_tags, max(window_capacity, 1))),
            window_sorted=np.zeros((n_tags, max(window_capacity, 1))),
            window_pos=np.zeros((n_tags, 2), np.int64),
            counters=np.zeros((n_tags, N_COUNTERS), np.int64),
        )

    @property
    def total(self) -> np.ndarray:
        """Cumulative total per tag (rate and totalizer channels), a view."""
        return self.scalars[:, S_TOTAL]

    @property
    def filtered(self) -> np.ndarray:
        return self.scalars[:, S_FILTERED]

    def counts(self, k: int) -> dict[str, int]:
        return {name: int(c) for name, c in zip(FLAG_NAMES, self.counters[k], strict=True)}


@dataclass(frozen=True, slots=True)
class ChainOutput:
    """Per-sample outputs of one batch; NaN values where the sample was not used."""

    filtered: np.ndarray  # float64
    despiked: np.ndarray  # float64 (clamped, despiked; the raw value for totalizers)
    flags: np.ndarray  # uint8 bitmask

    @staticmethod
    def new(n: int) -> ChainOutput:
        return ChainOutput(np.empty(n), np.empty(n), np.empty(n, np.uint8))

    def __len__(self) -> int:
        return int(self.flags.shape[0])


def condition(
    params: ChainParams,
    state: ChainState,
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    out: ChainOutput | None = None,
) -> ChainOutput:
    """Run the fused chain over one batch (arrays as in `SampleBatch`); returns `out`."""
    if out is None:
        out = ChainOutput.new(tag.shape[0])
    if not (tag.shape[0] == t.shape[0] == value.shape[0] == quality.shape[0] == len(out)):
        raise ValueError("batch and output arrays differ in length")
    if params.n_tags != state.scalars.shape[0]:
        raise ValueError("params and state are for different tag counts")
    condition_chain(
        tag, t, value, quality, params.kind, params.values,
        state.scalars, state.window_ring, state.window_sorted, state.window_pos, state.counters,
        out.filtered, out.despiked, out.flags,
    )  # fmt: skip
    return out


@njit(cache=True, inline="always")
def window_insert(srt: np.ndarray, k: int, n_held: int, x: float) -> None:
    """Insert x into the sorted first n_held values of tag k's window (while filling)."""
    j = n_held
    while j > 0 and srt[k, j - 1] > x:
        srt[k, j] = srt[k, j - 1]
        j -= 1
    srt[k, j] = x


@njit(cache=True, inline="always")
def window_replace(srt: np.ndarray, k: int, w: int, old: float, new: float) -> None:
    """Replace one `old` by `new` in tag k's sorted window of w values: O(w).

    Both positions come from branch-free counts (a scan that stops at `old` mispredicts its
    exit on nearly every sample); then the values between them move one slot towards old's
    slot, in the order that reads each before it is overwritten, and `new` takes the gap.
    """
    at_old = 0  # index of the first `old`
    below_new = 0
    for j in range(w):
        v = srt[k, j]
        at_old += v < old
        below_new += v < new
    at_new = below_new - (old < new)  # rank of `new` among the values that stay
    step = 2 * np.int64(at_old < at_new) - 1
    j = at_old
    while j != at_new:
        srt[k, j] = srt[k, j + step]
        j += step
    srt[k, at_new] = new


# The Hampel window most rate channels use (domain.md: 7-21). For it the sorted window is
# rebuilt from the ring by a sorting network instead of `window_replace`: 16 min/max pairs with
# no branch, against a move loop whose random length mispredicts on nearly every sample
# (measured: 10 ns against 33 ns per sample for the window and its MAD).
NETWORK_WINDOW = 7


@njit(cache=True, inline="always")
def _ordered(a: float, b: float) -> tuple[float, float]:
    return min(a, b), max(a, b)


@njit(cache=True, inline="always")
def sort_ring7(ring: np.ndarray, srt: np.ndarray, k: int) -> None:
    """srt[k, :7] = ring[k, :7] sorted, by Knuth's 16-comparator network for 7 inputs."""
    a0, a1, a2, a3 = ring[k, 0], ring[k, 1], ring[k, 2], ring[k, 3]
    a4, a5, a6 = ring[k, 4], ring[k, 5], ring[k, 6]
    a0, a6 = _ordered(a0, a6)
    a2, a3 = _ordered(a2, a3)
    a4, a5 = _ordered(a4, a5)
    a0, a2 = _ordered(a0, a2)
    a1, a4 = _ordered(a1, a4)
    a3, a6 = _ordered(a3, a6)
    a0, a1 = _ordered(a0, a1)
    a2, a5 = _ordered(a2, a5)
    a3, a4 = _ordered(a3, a4)
    a1, a2 = _ordered(a1, a2)
    a4, a6 = _ordered(a4, a6)
    a2, a3 = _ordered(a2, a3)
    a4, a5 = _ordered(a4, a5)
    a1, a2 = _ordered(a1, a2)
    a3, a4 = _ordered(a3, a4)
    a5, a6 = _ordered(a5, a6)
    srt[k, 0], srt[k, 1], srt[k, 2], srt[k, 3] = a0, a1, a2, a3
    srt[k, 4], srt[k, 5], srt[k, 6] = a4, a5, a6


@njit(cache=True, inline="always")
def window_slide(ring: np.ndarray, srt: np.ndarray, k: int, w: int, old: float, new: float) -> None:
    """Keep srt[k, :w] the sorted copy of the full ring[k, :w] after `new` took `old`'s slot."""
    if w == NETWORK_WINDOW:
        sort_ring7(ring, srt, k)
    else:
        window_replace(srt, k, w, old, new)


@njit(cache=True, inline="always")
def median_abs_deviation(srt: np.ndarray, k: int, w: int, m: float) -> float:
    """MAD of tag k's sorted odd window about its median m, in O(w) without sorting.

    The deviations left of the median grow leftwards and those right of it rightwards: two
    sorted runs L and R of h = w // 2 values each, and the MAD is the h-th smallest of their
    union, min over i of max(L_i, R_(h-i)). min/max compile to branch-free instructions, and
    no step waits on the one before (a two-pointer merge would, and would mispredict).
    """
    h = w // 2
    d = min(srt[k, w - 1] - m, m - srt[k, 0])  # all h from one side
    for i in range(1, h):
        d = min(d, max(m - srt[k, h - i], srt[k, w - 1 - i] - m))
    return d


@njit(cache=True, inline="always")
def _lowpass_alpha(sc: np.ndarray, k: int, dt: float, tau: float) -> float:
    """1 - exp(-dt/tau), cached per tag: sampling is usually periodic, so dt repeats."""
    if dt != sc[k, S_ALPHA_DT] or tau != sc[k, S_ALPHA_TAU]:
        sc[k, S_ALPHA_DT] = dt
        sc[k, S_ALPHA_TAU] = tau
        sc[k, S_ALPHA] = 1.0 - math.exp(-dt / tau)
    return sc[k, S_ALPHA]


@njit(cache=True, inline="always")
def _counter_delta(
    raw: float, last_raw: float, dt: float, modulus: float, max_rate: float, quantum: float
) -> tuple[float, int]:
    """Mass counted by a totalizer between two readings, and the flags it earned."""
    delta = raw - last_raw
    limit = max_rate * dt / 3600.0 * RATE_HEADROOM + quantum
    flags = 0
    if delta < 0.0:
        if modulus > 0.0:
            delta += modulus
            flags |= ROLLOVER
        else:
            # Restarted from zero within the interval: what it counted since is real mass.
            delta = raw if 0.0 <= raw <= limit else 0.0
            flags |= RESET
    if delta > limit:
        delta = 0.0
        flags |= IMPLAUSIBLE
    return delta, flags


@njit(cache=True)
def _count_flags(counters: np.ndarray, k: int, f: int) -> None:
    for j in range(N_COUNTERS):
        if (f >> j) & 1:
            counters[k, j] += 1


@njit(cache=True)
def condition_chain(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    kind: np.ndarray,
    par: np.ndarray,
    sc: np.ndarray,
    ring: np.ndarray,
    srt: np.ndarray,
    pos: np.ndarray,
    counters: np.ndarray,
    out_filtered: np.ndarray,
    out_despiked: np.ndarray,
    out_flags: np.ndarray,
) -> None:
    """Clamp, despike, low-pass and totalize one batch in one pass (see the module docstring).

    kind/par are `ChainParams` arrays; sc, ring, srt, pos, counters are `ChainState` arrays,
    updated in place. Writes per-sample filtered and despiked values (NaN when the sample is
    not used) and flags.
    """
    n_tags = kind.shape[0]
    for k in range(n_tags):
        if kind[k, K_WINDOW] > ring.shape[1]:
            raise ValueError("Hampel window larger than the state's window capacity")
    for i in range(tag.shape[0]):
        k = tag[i]
        if k < 0 or k >= n_tags:
            raise IndexError("tag index out of range")
        ti = t[i]
        x = value[i]
        q = quality[i]
        if (q != _GOOD and q != _UNCERTAIN) or not (math.isfinite(x) and math.isfinite(ti)):
            f = UNUSABLE
        elif ti <= sc[k, S_LAST_T]:
            f = OUT_OF_ORDER
        else:
            f = 0
        if f != 0:
            out_filtered[i] = np.nan
            out_despiked[i] = np.nan
            out_flags[i] = f
            _count_flags(counters, k, f)
            continue

        channel = kind[k, K_CHANNEL]
        first = sc[k, S_LAST_T] == -np.inf
        dt = ti - sc[k, S_LAST_T]
        gap = not first and dt > par[k, P_MAX_GAP_S]
        if gap:
            f |= GAP

        d = x
        if channel != CHANNEL_TOTALIZER:
            if x < par[k, P_CLAMP_LO]:
                d = par[k, P_CLAMP_LO]
                f |= CLAMPED
            elif x > par[k, P_CLAMP_HI]:
                d = par[k, P_CLAMP_HI]
                f |= CLAMPED
            # Hampel, written out here: as an inlined helper taking the arrays it cost two
            # atomic reference-count updates per sample, as much as the rest of the filter.
            w = kind[k, K_WINDOW]
            if w > 0:
                if gap:
                    pos[k, W_HEAD] = 0
                    pos[k, W_FILL] = 0
                held = pos[k, W_FILL]
                if held < w:  # filling: no despiking yet
                    ring[k, held] = d
                    window_insert(srt, k, held, d)
                    pos[k, W_FILL] = held + 1
                else:
                    m = srt[k, w // 2]
                    # No shortcut for |d - m| <= n_sigma * s_floor (no spike whatever the MAD):
                    # on noisy rates that test is unpredictable, and its mispredictions cost
                    # more (about 5 ns a sample, measured) than the branch-free MAD (about 3 ns).
                    s = max(MAD_TO_SIGMA * median_abs_deviation(srt, k, w, m), par[k, P_S_FLOOR])
                    s = max(s, par[k, P_S_FLOOR_REL] * abs(m))
                    if abs(d - m) > par[k, P_N_SIGMA] * s:
                        f |= SPIKE
                    oldest = pos[k, W_HEAD]
                    old = ring[k, oldest]
                    ring[k, oldest] = d  # the window keeps the value, spike or not
                    pos[k, W_HEAD] = oldest + 1 if oldest + 1 < w else 0
                    window_slide(ring, srt, k, w, old, d)
                    if f & SPIKE:
                        d = m

        tau = par[k, P_TAU_S]
        if first or gap or tau == 0.0:
            y = d
        else:
            y = sc[k, S_FILTERED]
            y += _lowpass_alpha(sc, k, dt, tau) * (d - y)

        if not first:
            if channel == CHANNEL_RATE:
                if not gap:
                    sc[k, S_TOTAL] += 0.5 * (d + sc[k, S_LAST_DESPIKED]) * dt / 3600.0
            elif channel == CHANNEL_TOTALIZER:
                delta, tf = _counter_delta(
                    x, sc[k, S_LAST_RAW], dt, par[k, P_MODULUS], par[k, P_MAX_RATE], par[k, P_QUANTUM]
                )
                sc[k, S_TOTAL] += delta
                f |= tf

        sc[k, S_LAST_T] = ti
        sc[k, S_FILTERED] = y
        sc[k, S_LAST_DESPIKED] = d
        sc[k, S_LAST_RAW] = x
        out_filtered[i] = y
        out_despiked[i] = d
        out_flags[i] = f
        if f != 0:
            _count_flags(counters, k, f)


# Delay line ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DelayLine:
    """Per-stream values on a fixed time grid, kept for the newest `ring.shape[1]` bins."""

    ring: np.ndarray  # (n_streams, n_bins) float64, bin b in slot b % n_bins
    head: np.ndarray  # (n_streams,) int64: newest bin
    first: np.ndarray  # (n_streams,) int64: oldest bin ever written; head < first = empty

    @staticmethod
    def new(n_streams: int, n_bins: int) -> DelayLine:
        return DelayLine(
            ring=np.full((n_streams, n_bins), np.nan),
            head=np.full(n_streams, -1, np.int64),
            first=np.zeros(n_streams, np.int64),
        )


@njit(cache=True)
def delay_push(
    stream: np.ndarray,
    bin_index: np.ndarray,
    value: np.ndarray,
    ring: np.ndarray,
    head: np.ndarray,
    first: np.ndarray,
) -> None:
    """Write values at grid bins. A newer bin advances the head and leaves the skipped bins
    NaN (unknown); a bin already held is overwritten; a bin before the stream's first bin or
    older than the ring holds is dropped."""
    nb = ring.shape[1]
    for i in range(stream.shape[0]):
        s = stream[i]
        b = bin_index[i]
        if head[s] < first[s]:
            first[s] = b
            head[s] = b
        elif b > head[s]:
            for skipped in range(max(head[s] + 1, b - nb + 1), b):
                ring[s, skipped % nb] = np.nan
            head[s] = b
        elif b <= head[s] - nb or b < first[s]:
            continue
        ring[s, b % nb] = value[i]


@njit(cache=True)
def delay_read(
    ring: np.ndarray, head: np.ndarray, first: np.ndarray, at_bin: int, delay_bins: np.ndarray
) -> np.ndarray:
    """Each stream's value at bin `at_bin - delay_bins[s]`, linearly interpolated between the
    two neighbouring bins for a fractional delay; NaN outside the held history."""
    nb = ring.shape[1]
    n = ring.shape[0]
    out = np.full(n, np.nan)
    for s in range(n):
        if head[s] < first[s]:
            continue
        oldest = max(first[s], head[s] - nb + 1)
        whole = math.floor(delay_bins[s])
        frac = delay_bins[s] - whole
        newer = at_bin - np.int64(whole)
        if frac == 0.0:
            if oldest <= newer <= head[s]:
                out[s] = ring[s, newer % nb]
        elif oldest <= newer - 1 and newer <= head[s]:
            v_newer = ring[s, newer % nb]
            out[s] = v_newer + (ring[s, (newer - 1) % nb] - v_newer) * frac
    return out
