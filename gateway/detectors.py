"""Streaming fault detectors that turn conditioned signals into named alarm conditions.

Each detector is fed plant time and a tick's worth of numbers through `update(...)` and states
what holds now through `conditions()`, as `{alarm_id: (kind, subject, Severity, text)}` for
`gateway.alarms.AlarmBoard` (the same shape as `YieldPipeline.alarm_conditions`). Nothing here
does I/O or reads a clock, so a run is reproducible from its inputs. Every alarm text of the
detectors lives in this module, and each tells the operator what to do.

Detectors (domain.md section 3, "Failure modes that corrupt Y"):
- `StuckDetector`: a value that stops moving, or a source timestamp that stops advancing, while
  the process is active (numba kernel `stuck_update`, one pass over a tick's samples).
- `SpikeCounter`: spikes flagged by the conditioning kernel, counted per tag over the last hour.
- `Cusum`, `ZeroDriftDetector`: belt-weigher zero and span drift against a reference scale.
- `TotalizerEvents`: rollovers, resets and implausible jumps flagged by the conditioning kernel.
- `ClockSkewDetector`: source timestamps off the plant's common time, per tag and per group.
- `wrong_delay_conditions`: the text for the delay tracker's verdict.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from gateway.alarms import Severity, alarm_id

# Alarm kinds, the first half of every alarm id these detectors raise.
STUCK_SENSOR = "stuck_sensor"
SPIKE = "spike"
ZERO_DRIFT = "zero_drift"
SPAN_DRIFT = "span_drift"
WRONG_DELAY = "wrong_delay"
TOTALIZER_ROLLOVER = "totalizer_rollover"
TOTALIZER_RESET = "totalizer_reset"
CLOCK_SKEW = "clock_skew"

# Per-sample flag bits of the conditioning kernel (gateway.conditioning); mirrored here so the
# detectors do not depend on the kernel module, and a test holds the two equal.
FLAG_SPIKE = 1
FLAG_ROLLOVER = 8
FLAG_RESET = 16
FLAG_IMPLAUSIBLE = 32

# A rollover is expected and only logged. `Severity` has no INFO level yet: use it once it does.
INFO_SEVERITY: Severity = getattr(Severity, "INFO", Severity.WARNING)

Condition = tuple[str, str, Severity, str]
Conditions = dict[str, Condition]


def _condition(kind: str, subject: str, severity: Severity, text: str) -> tuple[str, Condition]:
    return alarm_id(kind, subject), (kind, subject, severity, text)


def _balance_severity(balance: bool) -> Severity:
    # A fault on a balance instrument corrupts the yield itself; elsewhere it is a maintenance job.
    return Severity.ALARM if balance else Severity.WARNING


def _per_tag_bool(value: bool | np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.bool_), (n,)).copy()


# --------------------------------------------------------------------------------------------
# Stuck values and frozen timestamps


@njit(cache=True)
def stuck_update(
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    t_now: float,
    active: np.ndarray,
    tol: np.ndarray,
    last_t: np.ndarray,
    last_value: np.ndarray,
    run_n: np.ndarray,
    run_t0: np.ndarray,
    advance_now: np.ndarray,
    arrival_now: np.ndarray,
) -> None:
    """Advance per-tag flat-run state over one tick's samples (state arrays updated in place).

    A sample with a non-finite value or time is ignored. One whose source time does not pass
    its tag's latest counts as an arrival only (`arrival_now` = t_now): its timestamp did not
    advance. Otherwise the sample advances the tag (`advance_now` = t_now) and, while the tag is
    active, extends the flat run if it lies within `tol` of the previous value, else starts a
    new run of 1 at its time; an inactive tag has no run (0). A NaN `tol` never extends a run.
    """
    for i in range(tag.shape[0]):
        k = tag[i]
        v = value[i]
        ti = t[i]
        if not (np.isfinite(v) and np.isfinite(ti)):
            continue
        arrival_now[k] = t_now
        if ti <= last_t[k]:
            continue
        last_t[k] = ti
        advance_now[k] = t_now
        if not active[k]:
            run_n[k] = 0
            run_t0[k] = np.nan
        elif run_n[k] > 0 and abs(v - last_value[k]) <= tol[k]:
            run_n[k] += 1
        else:
            run_n[k] = 1
            run_t0[k] = ti
        last_value[k] = v


@dataclass(frozen=True, slots=True)
class StuckConfig:
    """When a flat run counts as stuck. Zero disables a criterion."""

    window_samples: int = 30  # a run this many samples long is stuck ...
    window_s: float = 30.0  # ... or one spanning this much source time (at least 2 samples)
    timestamp_window_s: float = 30.0  # samples arrive but the source time stood still this long
    tol_rel: float = 0.1  # values within tol_rel * noise floor of the previous one do not move


@dataclass(slots=True)
class StuckState:
    """Per-tag arrays `stuck_update` works on."""

    last_t: np.ndarray
    last_value: np.ndarray
    run_n: np.ndarray
    run_t0: np.ndarray
    advance_now: np.ndarray
    arrival_now: np.ndarray

    @staticmethod
    def new(n_tags: int) -> StuckState:
        return StuckState(
            last_t=np.full(n_tags, -np.inf),
            last_value=np.full(n_tags, np.nan),
            run_n=np.zeros(n_tags, np.int64),
            run_t0=np.full(n_tags, np.nan),
            advance_now=np.full(n_tags, np.nan),
            arrival_now=np.full(n_tags, np.nan),
        )


class StuckDetector:
    """Per tag: a value with (near-)zero variation, or a frozen source timestamp, while active.

    `noise_floor[k]` is tag k's 1-sigma sample noise (including quantisation) in its own unit;
    a value moves when it changes by more than `tol_rel * noise_floor` from the previous sample,
    so exact repeats are always flat and a quantised but moving signal restarts the run on
    every step. NaN: the tag is not watched. Only active time counts: the run restarts when the
    process goes idle, so an idle line never raises this, and a stuck value is caught
    `window_samples` samples (or `window_s` seconds) after the process runs again. Runs are
    counted in samples received: a source that stops sending (an OPC UA subscription reports no
    change of a frozen value) is the silence watch's "tag_stale", not this.
    """

    def __init__(
        self,
        tag_names: Sequence[str],
        noise_floor: np.ndarray,
        balance: np.ndarray | None = None,
        config: StuckConfig | None = None,
    ) -> None:
        self.tag_names = list(tag_names)
        n = len(self.tag_names)
        self.config = config or StuckConfig()
        floor = np.asarray(noise_floor, np.float64)
        if floor.shape != (n,):
            raise ValueError("noise_floor needs one entry per tag")
        self.tol = self.config.tol_rel * floor
        self.balance = np.zeros(n, np.bool_) if balance is None else _per_tag_bool(balance, n)
        self.state = StuckState.new(n)
        self.active = np.zeros(n, np.bool_)
        self.t_now = math.nan

    def update(
        self, tag: np.ndarray, t: np.ndarray, value: np.ndarray, t_now: float, active: bool | np.ndarray
    ) -> None:
        """One tick: samples (tag index, source time, value), the tick's plant time, and whether
        the process each tag belongs to is active now (one bool for all, or one per tag)."""
        self.active = _per_tag_bool(active, len(self.tag_names))
        self.t_now = float(t_now)
        s = self.state
        stuck_update(
            np.ascontiguousarray(tag, np.int64),
            np.ascontiguousarray(t, np.float64),
            np.ascontiguousarray(value, np.float64),
            self.t_now,
            self.active,
            self.tol,
            s.last_t,
            s.last_value,
            s.run_n,
            s.run_t0,
            s.advance_now,
            s.arrival_now,
        )

    def value_stuck(self) -> np.ndarray:
        """Per tag: the value has been flat for the configured window while active."""
        c = self.config
        s = self.state
        long_run = np.zeros(len(self.tag_names), np.bool_)
        if c.window_samples > 0:
            long_run |= s.run_n >= c.window_samples
        if c.window_s > 0:
            with np.errstate(invalid="ignore"):
                long_run |= (s.run_n >= 2) & (s.last_t - s.run_t0 >= c.window_s)
        return self.active & long_run

    def timestamp_frozen(self) -> np.ndarray:
        """Per tag: samples keep arriving but their source time has not advanced for the window."""
        if self.config.timestamp_window_s <= 0:
            return np.zeros(len(self.tag_names), np.bool_)
        s = self.state
        with np.errstate(invalid="ignore"):
            frozen = s.arrival_now - s.advance_now >= self.config.timestamp_window_s
        return self.active & frozen

    def conditions(self) -> Conditions:
        out: Conditions = {}
        s = self.state
        frozen = self.timestamp_frozen()
        for k in np.flatnonzero(frozen):
            name = self.tag_names[k]
            age = s.arrival_now[k] - s.advance_now[k]
            key, cond = _condition(
                STUCK_SENSOR,
                name,
                _balance_severity(bool(self.balance[k])),
                f"{name}: source timestamp frozen for {age:.0f} s while the process runs; "
                "check the PLC/server sampling of this item (value excluded from the balance)",
            )
            out[key] = cond
        for k in np.flatnonzero(self.value_stuck() & ~frozen):
            name = self.tag_names[k]
            span = s.last_t[k] - s.run_t0[k]
            key, cond = _condition(
                STUCK_SENSOR,
                name,
                _balance_severity(bool(self.balance[k])),
                f"{name}: value stuck at {s.last_value[k]:.6g} for {span:.0f} s "
                f"({s.run_n[k]} samples) while the process runs; check the transmitter and its "
                "input card (value excluded from the balance)",
            )
            out[key] = cond
        return out


# --------------------------------------------------------------------------------------------
# Spike counts

_MINUTE_S = 60.0
_HOUR_MINUTES = 60
# More slots than minutes in the window, so a slot is never shared by two live minutes.
_SLOTS = 64


@dataclass(frozen=True, slots=True)
class SpikeConfig:
    """A tag is spiky when, over the last hour, it had more than `max_per_hour` spikes AND more
    than `max_fraction` of its samples flagged. The fraction keeps the Hampel filter's own
    false flags on a fast tag (about 0.3 % of Gaussian samples at 3 sigma) below the alarm;
    S3's 1-in-1000 injected spikes are expected, corrected and not an alarm."""

    max_per_hour: int = 30
    max_fraction: float = 0.02


class SpikeCounter:
    """Per-tag spike and sample counts in one-minute buckets over the last hour of plant time."""

    def __init__(self, tag_names: Sequence[str], config: SpikeConfig | None = None) -> None:
        self.tag_names = list(tag_names)
        n = len(self.tag_names)
        self.config = config or SpikeConfig()
        # [slot, tag]: a tick adds one contiguous row per minute it touches.
        self.spikes = np.zeros((_SLOTS, n), np.int64)
        self.samples = np.zeros((_SLOTS, n), np.int64)
        self.slot_minute = np.full(_SLOTS, np.iinfo(np.int64).min, np.int64)
        self.spikes_total = np.zeros(n, np.int64)
        self.now_minute: int | None = None

    def update(self, tag: np.ndarray, t: np.ndarray, flags: np.ndarray, t_now: float | None = None) -> None:
        """One tick of conditioned samples: tag index, source time and flag bits per sample.
        `t_now` (plant time) ends the hour window; default: the newest sample time seen."""
        tag = np.asarray(tag, np.int64)
        t = np.asarray(t, np.float64)
        spike = (np.asarray(flags, np.int64) & FLAG_SPIKE) != 0
        self.spikes_total += np.bincount(tag[spike], minlength=len(self.tag_names))
        if t_now is None:
            t_now = float(np.nanmax(t)) if len(t) and np.isfinite(t).any() else math.nan
        if math.isfinite(t_now):
            now_min = math.floor(t_now / _MINUTE_S)
            self.now_minute = now_min if self.now_minute is None else max(self.now_minute, now_min)
        if self.now_minute is None or not len(tag):
            return
        ok = np.isfinite(t)
        minute = np.full(len(t), self.now_minute, np.int64)
        minute[ok] = np.floor(t[ok] / _MINUTE_S).astype(np.int64)
        # A sample stamped ahead of plant time (clock skew) counts in the current minute.
        minute = np.minimum(minute, self.now_minute)
        live = minute > self.now_minute - _HOUR_MINUTES
        if not live.any():
            return
        n = len(self.tag_names)
        # A tick spans a minute or two: one pass per minute, each a per-tag bincount.
        for m in range(int(minute[live].min()), int(minute[live].max()) + 1):
            sel = minute == m
            if not sel.any():
                continue
            u = m % _SLOTS
            if m > self.slot_minute[u]:
                self.spikes[u] = 0
                self.samples[u] = 0
                self.slot_minute[u] = m
            elif m < self.slot_minute[u]:
                continue  # the slot has moved on to a newer minute: these are out of the window
            self.samples[u] += np.bincount(tag[sel], minlength=n)
            self.spikes[u] += np.bincount(tag[sel & spike], minlength=n)

    def _window(self) -> np.ndarray:
        if self.now_minute is None:
            return np.zeros(_SLOTS, np.bool_)
        return self.slot_minute > self.now_minute - _HOUR_MINUTES

    def counts_last_hour(self) -> np.ndarray:
        """Spikes per tag over the last hour (for self-metrics)."""
        return self.spikes[self._window()].sum(axis=0)

    def samples_last_hour(self) -> np.ndarray:
        return self.samples[self._window()].sum(axis=0)

    def spiky(self) -> np.ndarray:
        c = self.config
        spikes = self.counts_last_hour()
        return (spikes > c.max_per_hour) & (spikes > c.max_fraction * self.samples_last_hour())

    def conditions(self) -> Conditions:
        out: Conditions = {}
        spikes = self.counts_last_hour()
        samples = self.samples_last_hour()
        for k in np.flatnonzero(self.spiky()):
            name = self.tag_names[k]
            key, cond = _condition(
                SPIKE,
                name,
                Severity.WARNING,
                f"{name}: {spikes[k]} spikes in the last hour ({spikes[k] / max(samples[k], 1):.1%} "
                "of samples, replaced in the rate channel); check wiring, shielding and the "
                "instrument's diagnostics",
            )
            out[key] = cond
        return out


# --------------------------------------------------------------------------------------------
# CUSUM and belt-weigher drift


@dataclass(slots=True)
class Cusum:
    """Two-sided tabular CUSUM on a normalised residual z (sigma units).

    S+ = max(0, S+ + z - k), S- = max(0, S- - z - k); an alarm is raised when either passes h.
    Reset rule: while alarmed both sums are capped at `cap` (so the evidence can drain) and the
    alarm clears by itself once the alarming sum is back at 0, i.e. after the residual has sat
    at the baseline for about cap / k updates; `reset()` (the operator acknowledged a fix, e.g.
    re-zeroed the weigher) zeroes both at once. `run` counts updates since the alarming side was
    last 0: the change's estimated onset. Non-finite z is ignored.
    """

    k: float = 0.5
    h: float = 5.0
    cap: float = 10.0
    s_hi: float = 0.0
    s_lo: float = 0.0
    n_hi: int = 0  # updates since S+ was last 0
    n_lo: int = 0
    direction: int = 0  # +1 / -1 while alarmed, else 0

    def update(self, z: float) -> int:
        """Add one residual; returns the alarm direction (+1, -1, or 0 when not alarmed)."""
        if not math.isfinite(z):
            return self.direction
        self.s_hi = max(0.0, self.s_hi + z - self.k)
        self.s_lo = max(0.0, self.s_lo - z - self.k)
        self.n_hi = self.n_hi + 1 if self.s_hi > 0 else 0
        self.n_lo = self.n_lo + 1 if self.s_lo > 0 else 0
        if self.direction == 0 and (self.s_hi > self.h or self.s_lo > self.h):
            self.direction = 1 if self.s_hi >= self.s_lo else -1
        if self.direction != 0:
            self.s_hi = min(self.s_hi, self.cap)
            self.s_lo = min(self.s_lo, self.cap)
            if (self.s_hi if self.direction > 0 else self.s_lo) <= 0.0:
                self.direction = 0
        return self.direction

    @property
    def alarmed(self) -> bool:
        return self.direction != 0

    @property
    def run(self) -> int:
        if self.direction > 0:
            return self.n_hi
        if self.direction < 0:
            return self.n_lo
        return max(self.n_hi, self.n_lo)

    def reset(self) -> None:
        self.s_hi = self.s_lo = 0.0
        self.n_hi = self.n_lo = 0
        self.direction = 0


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Belt-weigher drift detection. Masses in tonnes, rates in t/h.

    Under load the detector compares blocks of `interval_s` of chained reference pairs. The
    belt's and the reference's display steps and boundary timing cancel within a chain (each
    boundary closes one pair and opens the next), so a block's random error is its two end
    boundaries' and hardly grows with its length, while a zero drift's excess grows with it:
    long blocks see a drift sooner. The block's 1-sigma is learned from the data (see
    `ZeroDriftDetector.block_sigma`): the pairs' noise structure over the last `sigma_pairs`,
    and, from `min_spread_blocks` calm blocks on, the spread of the blocks and of their
    neighbours' sums; never below `sigma_floor_rel` x the block's reference mass, nor below an
    explicit prior `belt_sigma_rel`/`ref_sigma_rel` (default 0). Learned from the data, it
    follows what the pairs really carry: coarse sampling (noisier, fewer chained boundaries)
    widens it and the CUSUM gets slower instead of alarming.
    """

    interval_s: float = 1800.0  # chained pair time per block; 0: the caller closes blocks
    min_block_share: float = 0.5  # a block cut by a chain break shorter than this is dropped
    chain_tolerance_s: float = 1.0  # a pair opening later than the last one closed breaks the chain
    belt_sigma_rel: float = 0.0
    belt_sigma_abs_t: float = 0.0
    ref_sigma_rel: float = 0.0
    ref_sigma_abs_t: float = 0.0
    sigma_floor_rel: float = 0.0003  # of a block's reference mass
    sigma_blocks: int = 48  # healthy blocks the robust sigma is taken over ...
    min_spread_blocks: int = 6  # ... once there are this many after the warm-up
    sigma_pairs: int = 300  # healthy pairs the noise structure is taken over ...
    min_sigma_pairs: int = 30  # ... once there are this many
    sigma_margin: float = 1.5  # see `ZeroDriftDetector.block_sigma`
    k: float = 0.5
    h: float = 5.0
    cap: float = 10.0
    baseline_h: float = 24.0  # EWMA time constant of the standing belt/reference ratio
    warmup_intervals: int = 6  # loaded blocks the baseline is fitted over before the CUSUM starts
    min_interval_ref_t: float = 0.02  # intervals with less reference mass say nothing about span
    empty_sigma_tph: float = 0.0125  # 1-sigma of one rate sample at empty belt
    empty_check_samples: int = 60  # samples averaged into one empty-belt zero check
    # Empty-belt checks are independent looks at a configured sigma: at k = 0.5, h = 5 in units
    # of the bare sigma the in-control run length is about 465 looks, in units of 1.5 sigma 10^5.
    empty_sigma_margin: float = 1.5
    # Blocks are kept in segments of this much pair time for zero/span discrimination and the
    # estimate (finer than a block: more spread of rates, a more current estimate).
    segment_s: float = 600.0
    estimate_intervals: int = 6  # newest segments the current correction is estimated from
    history_intervals: int = 144  # segments kept for zero/span discrimination
    separation_sigmas: float = 3.0  # how clear a rate-independent offset must be to call it zero


@dataclass(frozen=True, slots=True)
class DriftEstimate:
    """What the belt weigher reads wrong now, for the reconciliation to correct.

    reading = span_factor * true + zero_tph * hours, so true = (reading - zero_tph * h) / span_factor.
    `baseline_factor` is the standing belt/reference ratio the detector learned (a fixed
    calibration error, not an alarm). `kind` names the active alarm, if any.
    """

    kind: str | None
    zero_tph: float
    span_factor: float
    baseline_factor: float
    since_t: float  # plant time of the estimated onset (NaN: no drift)
    intervals: int  # loaded intervals behind the estimate


@dataclass(frozen=True, slots=True)
class _Interval:
    t_end: float
    hours: float
    ref_tph: float
    excess_tph: float  # (belt - baseline * ref) per hour
    sigma_tph: float  # its 1-sigma (without margin)


def spread_sigma(x: Sequence[float]) -> float:
    """The larger of the root-mean-square deviation from the median and 1.4826 x the median
    absolute deviation: the median centres it against a drift's first blocks, the RMS keeps a
    heavy-tailed sample's outliers in it (NaN for no data)."""
    a = np.asarray(x, np.float64)
    if not len(a):
        return math.nan
    dev = a - np.median(a)
    return float(max(np.sqrt(np.mean(dev**2)), 1.4826 * np.median(np.abs(dev))))


class ZeroDriftDetector:
    """Zero and span drift of one belt weigher against a reference measurement of its stream.

    Two inputs. (a) While the belt runs empty (the caller says so: feed stopped, airlock shut),
    the mean rate should be 0: each check of `empty_check_samples` samples gives the residual
    mean / (empty_sigma_tph / sqrt(n)) into a zero CUSUM. (b) Under load, per block of chained
    pairs, the excess of the belt total over the reference times the standing ratio, divided
    by the block's learned 1-sigma (`DriftConfig`), into a balance CUSUM. A zero drift moves the
    excess by its t/h times the block's hours, a span drift by its share of the block's mass;
    both are a change from the baseline b: belt/ref as an exponentially weighted ratio of sums
    over `baseline_h` hours (first fitted over the warm-up's pairs), frozen while any alarm is
    up, so a fixed calibration error is learned and only a change alarms. A block that would
    raise the alarm closes early. Blocks are cut at chain breaks (a continuous-feed lot, a
    rejected pair); a stub shorter than `min_block_share` is dropped.

    Zero or span: a zero error is additive (the same t/h at any load, and seen at empty belt), a
    span error multiplicative. A balance alarm is called "zero_drift" when the empty-belt CUSUM
    is alarmed too, or when a weighted fit excess = z + d * rate over the blocks since the
    onset shows a clear rate-independent z (|z| >= 3 se) and no clear d (|d| < 2 se), which needs
    the rate to have varied; otherwise, at a steady rate, the two cannot be told apart and it is
    called "span_drift" (drifting ratio). An empty-belt alarm alone is "zero_drift".
    """

    def __init__(
        self,
        subject: str,
        reference: str,
        config: DriftConfig | None = None,
        balance: bool = True,
    ) -> None:
        self.subject = subject
        self.reference = reference
        self.config = c = config or DriftConfig()
        self.balance = balance
        self.loaded = Cusum(k=c.k, h=c.h, cap=c.cap)
        self.empty = Cusum(k=c.k, h=c.h, cap=c.cap)
        self.baseline = math.nan  # belt/ref ratio
        self.baseline_n = 0
        self._warm_belt = 0.0
        self._warm_ref = 0.0
        # Cumulative (reference, belt) at each warm-up pair's end: the baseline's first fit.
        self._warm_cum: list[tuple[float, float]] = []
        # Excess of calm blocks against the baseline of their time: the blocks' spread.
        self.residuals: deque[float] = deque(maxlen=c.sigma_blocks)
        # Per pair: excess against the baseline, and whether it chains on to the previous one.
        self.pair_residuals: deque[float] = deque(maxlen=c.sigma_pairs)
        self.pair_chained: deque[bool] = deque(maxlen=c.sigma_pairs)
        self._block_pairs: list[tuple[float, bool]] = []  # (excess, chained) of the block's pairs
        self._seg_s = 0.0  # the open segment: pair time, masses, pairs
        self._seg_belt = 0.0
        self._seg_ref = 0.0
        self._seg_n = 0
        self._block_starts: deque[float] = deque(maxlen=c.history_intervals)  # of judged blocks
        self.history: deque[_Interval] = deque(maxlen=c.history_intervals)
        self.empty_means: deque[float] = deque(maxlen=5)
        self.intervals_seen = 0
        self.blocks_dropped = 0
        self._acc_t0 = math.nan
        self._acc_t_last = math.nan  # end of the newest pair in the block
        self._acc_s = 0.0  # pair time in the block
        self._chain_broken = True  # the next pair does not chain on to the last one kept
        self._acc_belt = 0.0
        self._acc_ref = 0.0
        self._empty_sum = 0.0
        self._empty_n = 0
        self._onset_t = math.nan
        self._kind: str | None = None  # re-judged after each interval or empty-belt check

    # -- inputs ---------------------------------------------------------------------------
    def update_balance(
        self, t: float, belt_delta_t: float, ref_delta_t: float, t_start: float = math.nan
    ) -> None:
        """One pair (or tick) under load ending at plant time t: mass the belt weigher and the
        reference saw over it (tonnes, aligned by the caller for the transport between them).
        `t_start` is when it opened (NaN: where the last one ended); a pair opening after the
        last one closed breaks the chain and ends the block first."""
        c = self.config
        if (
            math.isfinite(t_start)
            and math.isfinite(self._acc_t_last)
            and t_start - self._acc_t_last > c.chain_tolerance_s
        ):
            self.close_interval(self._acc_t_last, cut=True)
            self._chain_broken = True
        if math.isnan(self._acc_t0):
            self._acc_t0 = t_start if math.isfinite(t_start) else t
            self._acc_t_last = self._acc_t0
        dt = max(t - self._acc_t_last, 0.0)
        self._acc_s += dt
        self._acc_t_last = t
        self._acc_belt += belt_delta_t
        self._seg_s += dt
        self._seg_belt += belt_delta_t
        self._seg_ref += ref_delta_t
        self._seg_n += 1
        if math.isfinite(self.baseline):
            self._block_pairs.append((belt_delta_t - self.baseline * ref_delta_t, not self._chain_broken))
        self._chain_broken = False
        self._acc_ref += ref_delta_t
        if self.baseline_n < c.warmup_intervals:
            ref0, belt0 = self._warm_cum[-1] if self._warm_cum else (0.0, 0.0)
            self._warm_cum.append((ref0 + ref_delta_t, belt0 + belt_delta_t))
        if c.interval_s > 0 and (self._acc_s >= c.interval_s or self._open_block_alarms()):
            self.close_interval(t)
        elif c.segment_s > 0 and self._seg_s >= c.segment_s:
            self._close_segment(t)

    def _close_segment(self, t: float, keep: bool = True) -> None:
        """End the open segment at plant time t; kept in the history once the CUSUM runs."""
        hours, belt, ref, n = self._seg_s / 3600.0, self._seg_belt, self._seg_ref, self._seg_n
        self._seg_s = self._seg_belt = self._seg_ref = 0.0
        self._seg_n = 0
        c = self.config
        if not (keep and hours > 0 and ref > 0 and math.isfinite(belt)):
            return
        if self.baseline_n >= c.warmup_intervals:
            excess = belt - self.baseline * ref
            sigma = self.block_sigma(belt, ref, n)
            self.history.append(_Interval(t, hours, ref / hours, excess / hours, sigma / hours))

    def _open_block_alarms(self) -> bool:
        """Closing the open block now would raise the balance alarm: then it closes early, so a
        clear drift is not held back to the block's end."""
        if self.baseline_n < self.config.warmup_intervals or self.loaded.alarmed or self._acc_ref <= 0:
            return False
        sigma = self.block_sigma(self._acc_belt, self._acc_ref, len(self._block_pairs))
        if not sigma > 0:
            return False
        z = (self._acc_belt - self.baseline * self._acc_ref) / sigma
        cs = self.loaded
        return max(cs.s_hi + z - cs.k, cs.s_lo - z - cs.k) > cs.h

    def close_interval(self, t: float, cut: bool = False) -> None:
        """End the current block at plant time t (called by `update_balance`, or by the caller
        at reference boundaries when `interval_s` is 0). `cut`: a chain break ended it early; a
        block shorter than `min_block_share` of `interval_s` is then dropped (a lot edge's few
        pairs carry little drift and most of the odd boundaries)."""
        if math.isnan(self._acc_t0):
            return
        c = self.config
        seconds = self._acc_s if self._acc_s > 0 else t - self._acc_t0
        t0 = self._acc_t0
        belt, ref = self._acc_belt, self._acc_ref
        self._acc_t0 = self._acc_t_last = math.nan
        self._acc_s = 0.0
        pairs = self._block_pairs
        self._block_pairs = []
        self._acc_belt = self._acc_ref = 0.0
        if cut and c.interval_s > 0 and seconds < c.min_block_share * c.interval_s:
            self.blocks_dropped += 1
            self._close_segment(t, keep=False)
            return
        hours = seconds / 3600.0
        usable = hours > 0 and ref >= c.min_interval_ref_t and math.isfinite(belt)
        self._close_segment(t, keep=usable)
        if usable:
            self._loaded_interval(t, t0, hours, belt, ref, pairs)

    def update_empty(self, t: float, rate_sum_tph: float, n_samples: int) -> None:
        """One tick with the belt running empty: the sum and count of its rate samples."""
        c = self.config
        self._empty_sum += rate_sum_tph
        self._empty_n += n_samples
        if self._empty_n < c.empty_check_samples:
            return
        mean = self._empty_sum / self._empty_n
        sigma = c.empty_sigma_tph / math.sqrt(self._empty_n)
        self._empty_sum, self._empty_n = 0.0, 0
        self.empty_means.append(mean)
        was = self.empty.alarmed
        self.empty.update(mean / (c.empty_sigma_margin * sigma))
        if self.empty.alarmed and not was and not self.loaded.alarmed:
            self._onset_t = t
        if not (self.empty.alarmed or self.loaded.alarmed):
            self._onset_t = math.nan
        self._kind = self._judge()

    def acknowledge(self, recalibrated: bool) -> None:
        """The operator dealt with the alarm: zero both CUSUMs. After a re-zero or recalibration
        the standing ratio is learned afresh; without one the old baseline stays, so a drift
        still present raises the alarm again within a few intervals."""
        self.loaded.reset()
        self.empty.reset()
        self.empty_means.clear()
        self._onset_t = math.nan
        self._kind = None
        if recalibrated:
            self.baseline = math.nan
            self.baseline_n = 0
            self._warm_belt = self._warm_ref = 0.0
            self._warm_cum.clear()
            self.residuals.clear()
            self.pair_residuals.clear()
            self.pair_chained.clear()
            self.intervals_seen = 0
            self.history.clear()
            self._block_starts.clear()

    # -- state ----------------------------------------------------------------------------
    def pair_noise(self) -> tuple[float, float]:
        """(boundary sigma, own sigma) of one pair's excess, from the healthy pairs (NaN: too few).

        A pair's error is the difference of its two boundaries' errors (display steps, the
        belt's reading off the scale's step; each boundary closes one pair and opens the next)
        plus its own (a reference's or belt's random error of the batch). The boundary part
        makes neighbouring pairs' errors anti-correlated: lag-1 autocovariance -s_b^2 against a
        variance of 2 s_b^2 + s_i^2. The own variance is taken two standard errors below its
        estimate (it is a small difference of large terms; read too high, the margin on it
        would blunt the detector for nothing). Outliers (a lot edge's odd pair) are clipped at
        4 robust sigmas first."""
        c = self.config
        if len(self.pair_residuals) < c.min_sigma_pairs:
            return math.nan, math.nan
        e = np.asarray(self.pair_residuals, np.float64)
        d = e - np.median(e)
        clip = 4.0 * 1.4826 * float(np.median(np.abs(d)))
        d = np.clip(d, -clip, clip)
        chained = np.asarray(self.pair_chained, np.bool_)[1:]
        if not chained.any():
            return 0.0, math.sqrt(float(np.mean(d**2)))
        lag = (d[1:] * d[:-1])[chained]
        # Not capped at half the variance: for boundary errors alone the two estimate the same
        # thing, and the smaller of two noisy estimates reads low.
        boundary_var = max(-float(np.mean(lag)), 0.0)
        # Per chained pair: its square less twice the boundary variance is the own variance.
        own = d[1:][chained] ** 2 + 2.0 * lag
        own_var = float(np.mean(own)) - 2.0 * float(np.std(own)) / math.sqrt(len(own))
        return math.sqrt(boundary_var), math.sqrt(max(own_var, 0.0))

    def block_sigma(self, belt: float, ref: float, n_pairs: int = 1) -> float:
        """1-sigma a block's excess is standardised by: learned from the healthy data, with floors.

        The boundary errors telescope: within a block they cancel but for its two ends, and
        across blocks an end's error leaves one block and enters the next, so they cannot
        build a CUSUM up. The pairs' own errors add up over a block and across blocks, and a
        run of them builds the CUSUM up like any independent noise: they take `sigma_margin`
        (the in-control run length at k = 0.5, h = 5 is about 465 looks two-sided in units of
        the bare sigma, about 10^5 in units of 1.5 sigma). So the block's sigma is
        sqrt(2 s_b^2 + margin^2 n s_i^2) from the pairs' noise structure, and no less than the
        healthy blocks' own spread (which would show a noise the pair model misses)."""
        c = self.config
        b = self.baseline if math.isfinite(self.baseline) else 1.0
        prior = math.hypot(
            c.belt_sigma_rel * belt + c.belt_sigma_abs_t, b * (c.ref_sigma_rel * ref + c.ref_sigma_abs_t)
        )
        learned = 0.0
        s_b, s_i = self.pair_noise()
        spread = spread_sigma(self.residuals) if len(self.residuals) >= c.min_spread_blocks else 0.0
        if math.isfinite(s_b):
            # What the blocks spread beyond their two ends' boundary errors adds up: it
            # takes the margin too.
            own_var = max(max(n_pairs, 1) * s_i**2, spread**2 - 2.0 * s_b**2)
            learned = math.sqrt(2.0 * s_b**2 + c.sigma_margin**2 * own_var)
        elif len(self.residuals) >= c.warmup_intervals:
            learned = c.sigma_margin * spread_sigma(self.residuals)
        if len(self.residuals) >= c.min_spread_blocks:
            # Errors that wander (a ratio that differs from lot to lot, as coarse sampling
            # makes it) or do not cancel build a CUSUM up like a drift: the spread of sums of
            # neighbouring blocks per block shows them (boundary errors cancel in such sums).
            r = np.asarray(self.residuals, np.float64)
            for m in (2, 4):
                if len(r) >= 3 * m:
                    sums = np.convolve(r, np.ones(m), mode="valid")
                    learned = max(learned, c.sigma_margin * spread_sigma(sums) / math.sqrt(m))
        return max(learned, c.sigma_margin * prior, c.sigma_floor_rel * ref)

    def _loaded_interval(
        self, t: float, t0: float, hours: float, belt: float, ref: float, pairs: list[tuple[float, bool]]
    ) -> None:
        c = self.config
        self.intervals_seen += 1
        healthy = not (self.loaded.alarmed or self.empty.alarmed)
        excess = math.nan
        if self.baseline_n > 0:
            excess = belt - self.baseline * ref
        if self.baseline_n >= c.warmup_intervals:
            sigma = self.block_sigma(belt, ref, len(pairs))
            self._block_starts.append(t0)
            was = self.loaded.alarmed
            if sigma > 0:
                self.loaded.update(excess / sigma)
            if self.loaded.alarmed and not was:
                run = min(max(self.loaded.run, 1), len(self._block_starts))
                self._onset_t = self._block_starts[-run]
        calm = max(self.loaded.s_hi, self.loaded.s_lo) < c.h / 2
        if healthy and not (self.loaded.alarmed or self.empty.alarmed):
            # The pairs' noise is learned from every block without an alarm (leaving out the
            # ones a rising CUSUM holds would leave out the large errors), each block's pairs
            # about their own mean, so a drift's slow rise before the alarm is no noise. The
            # blocks' own excess, a level, only from calm ones.
            if math.isfinite(excess) and calm and self.baseline_n >= c.warmup_intervals:
                self.residuals.append(excess)
            if pairs:
                mean = sum(e for e, _ in pairs) / len(pairs)
                for e, chained in pairs:
                    self.pair_residuals.append(e - mean)
                    self.pair_chained.append(chained)
            # The standing ratio only from blocks without an alarm, so a drift does not teach
            # itself in once found; before, its `baseline_h` memory learns little of it (and
            # freezing it while the CUSUM merely rises would lock a warm-up error in).
            self.baseline_n += 1
            # A ratio of (exponentially weighted) sums, not a mean of ratios: each block's
            # boundary errors cancel against its neighbours', so its error falls with the mass
            # behind it. Plain sums over the warm-up, then a `baseline_h` memory.
            if self.baseline_n > c.warmup_intervals:
                keep = max(1.0 - hours / c.baseline_h, 0.0)
                self._warm_belt *= keep
                self._warm_ref *= keep
            self._warm_belt += belt
            self._warm_ref += ref
            self.baseline = self._warm_belt / self._warm_ref
            if self.baseline_n == c.warmup_intervals:
                self._fit_warm_baseline()
            self._onset_t = math.nan
        self._kind = self._judge()

    def _fit_warm_baseline(self) -> None:
        """The warm-up's ratio as the slope of cumulative belt on cumulative reference over all
        its pair ends: a ratio of sums rests on its last boundary alone, and one bad boundary
        there would bias the baseline for hours; the fit spreads it over every boundary."""
        if len(self._warm_cum) >= 3:
            cum = np.asarray(self._warm_cum, np.float64)
            x = cum[:, 0] - cum[:, 0].mean()
            if float(np.dot(x, x)) > 0:
                slope = float(np.dot(x, cum[:, 1] - cum[:, 1].mean()) / np.dot(x, x))
                if math.isfinite(slope) and slope > 0:
                    self.baseline = slope
                    self._warm_belt = slope * self._warm_ref
        self._warm_cum = []

    def _since_onset(self) -> list[_Interval]:
        hist = list(self.history)
        if math.isnan(self._onset_t):
            return hist[-self.config.estimate_intervals :]
        return [iv for iv in hist if iv.t_end > self._onset_t]

    def _rate_independent(self, intervals: list[_Interval]) -> bool:
        """A clear additive offset and no clear gain change (needs rate spread to tell)."""
        if len(intervals) < 4:
            return False
        q = np.array([iv.ref_tph for iv in intervals])
        y = np.array([iv.excess_tph for iv in intervals])
        w = 1.0 / np.array([iv.sigma_tph for iv in intervals]) ** 2
        x = np.column_stack([np.ones_like(q), q])
        m = x.T @ (w[:, None] * x)
        if np.linalg.cond(m) > 1e12:
            return False
        cov = np.linalg.inv(m)
        coef = cov @ (x.T @ (w * y))
        resid = y - x @ coef
        # A ramp does not fit a constant: widen the errors by the misfit rather than trust them.
        chi2 = float(np.sum(w * resid**2)) / max(len(y) - 2, 1)
        se = np.sqrt(np.diag(cov) * max(1.0, chi2))
        z_sig = abs(coef[0]) / se[0]
        d_sig = abs(coef[1]) / se[1]
        return bool(z_sig >= self.config.separation_sigmas and d_sig < 2.0)

    def kind(self) -> str | None:
        """The alarm kind that holds now, if any."""
        return self._kind

    def _judge(self) -> str | None:
        if self.empty.alarmed:
            return ZERO_DRIFT
        if not self.loaded.alarmed:
            return None
        return ZERO_DRIFT if self._rate_independent(self._since_onset()) else SPAN_DRIFT

    def estimate(self) -> DriftEstimate:
        c = self.config
        kind = self.kind()
        base = self.baseline if math.isfinite(self.baseline) else 1.0
        recent = list(self.history)[-c.estimate_intervals :]
        zero = 0.0
        span = base
        if kind == ZERO_DRIFT:
            if self.empty.alarmed and self.empty_means:
                zero = float(np.mean(self.empty_means))
            elif recent:
                zero = sum(iv.excess_tph * iv.hours for iv in recent) / sum(iv.hours for iv in recent)
        elif kind == SPAN_DRIFT and recent:
            excess = sum(iv.excess_tph * iv.hours for iv in recent)
            ref = sum(iv.ref_tph * iv.hours for iv in recent)
            span = base + excess / ref
        return DriftEstimate(
            kind=kind,
            zero_tph=zero,
            span_factor=span,
            baseline_factor=base,
            since_t=self._onset_t if kind else math.nan,
            intervals=len(recent),
        )

    def conditions(self) -> Conditions:
        est = self.estimate()
        if est.kind is None:
            return {}
        severity = _balance_severity(self.balance)
        if est.kind == ZERO_DRIFT:
            where = "at empty belt" if self.empty.alarmed else "rate-independent, under load"
            text = (
                f"{self.subject}: zero drift {est.zero_tph:+.3f} t/h suspected ({where}); re-zero "
                "the belt weigher when the belt runs empty, never under load"
            )
        else:
            change = (est.span_factor - est.baseline_factor) / est.baseline_factor
            text = (
                f"{self.subject}: span drift {change:+.1%} against {self.reference} (beyond its "
                f"standing {est.baseline_factor - 1:+.1%}); check the zero at the next empty belt "
                "(a steady rate cannot tell zero from span), then run a material test and "
                "recalibrate; reconciliation corrects the bias meanwhile"
            )
        key, cond = _condition(est.kind, self.subject, severity, text)
        return {key: cond}


# --------------------------------------------------------------------------------------------
# Totalizer events


@dataclass(frozen=True, slots=True)
class TotalizerConfig:
    hold_s: float = 900.0  # an event's condition stays up this long after the event


class TotalizerEvents:
    """Rollovers (expected, logged), resets and implausible jumps of totalizer tags, from the
    conditioning kernel's flags. The kernel has already made the mass right (modulo, rebase);
    these conditions say it happened, for `hold_s` of plant time after the latest event."""

    def __init__(self, tag_names: Sequence[str], config: TotalizerConfig | None = None) -> None:
        self.tag_names = list(tag_names)
        n = len(self.tag_names)
        self.config = config or TotalizerConfig()
        self.rollovers = np.zeros(n, np.int64)
        self.resets = np.zeros(n, np.int64)
        self.implausible = np.zeros(n, np.int64)
        self.last_rollover = np.full(n, -np.inf)
        self.last_reset = np.full(n, -np.inf)
        self.last_implausible = np.full(n, -np.inf)
        self.t_now = -math.inf

    def update(self, tag: np.ndarray, t: np.ndarray, flags: np.ndarray, t_now: float | None = None) -> None:
        """One tick of conditioned samples (tag index, source time, flag bits); `t_now` is the
        plant time conditions expire against (default: the newest sample time seen)."""
        tag = np.asarray(tag, np.int64)
        t = np.asarray(t, np.float64)
        flags = np.asarray(flags, np.int64)
        if t_now is None and len(t):
            t_now = float(np.nanmax(t))
        if t_now is not None and math.isfinite(t_now):
            self.t_now = max(self.t_now, t_now)
        for bit, count, last in (
            (FLAG_ROLLOVER, self.rollovers, self.last_rollover),
            (FLAG_RESET, self.resets, self.last_reset),
            (FLAG_IMPLAUSIBLE, self.implausible, self.last_implausible),
        ):
            hit = (flags & bit) != 0
            if hit.any():
                count += np.bincount(tag[hit], minlength=len(count))
                np.maximum.at(last, tag[hit], t[hit])

    def _recent(self, last: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # -inf - -inf before any event or sample: not recent
            return self.t_now - last < self.config.hold_s

    def conditions(self) -> Conditions:
        out: Conditions = {}
        for k in np.flatnonzero(self._recent(self.last_rollover)):
            name = self.tag_names[k]
            key, cond = _condition(
                TOTALIZER_ROLLOVER,
                name,
                INFO_SEVERITY,
                f"{name}: totalizer rolled over ({self.rollovers[k]} so far); expected, counted "
                "modulo its range, no mass lost; no action needed",
            )
            out[key] = cond
        reset = self._recent(self.last_reset)
        jump = self._recent(self.last_implausible)
        for k in np.flatnonzero(reset | jump):
            name = self.tag_names[k]
            what = []
            if reset[k]:
                what.append(f"reset to zero ({self.resets[k]} so far)")
            if jump[k]:
                what.append(f"jumped implausibly ({self.implausible[k]} so far)")
            key, cond = _condition(
                TOTALIZER_RESET,
                name,
                Severity.WARNING,
                f"{name}: totalizer {' and '.join(what)}; rebased, mass across the event may be "
                "short by one sample's flow; find out who reset or preset the counter",
            )
            out[key] = cond
        return out


# --------------------------------------------------------------------------------------------
# Clock skew


@njit(cache=True)
def ring_push(tag: np.ndarray, x: np.ndarray, ring: np.ndarray, head: np.ndarray, filled: np.ndarray) -> None:
    """Append each sample's x to its tag's ring (row `tag` of `ring`), oldest overwritten;
    non-finite x is skipped. `head` is the next write position, `filled` the count held."""
    w = ring.shape[1]
    for i in range(tag.shape[0]):
        if not np.isfinite(x[i]):
            continue
        k = tag[i]
        ring[k, head[k]] = x[i]
        head[k] = (head[k] + 1) % w
        if filled[k] < w:
            filled[k] += 1


@dataclass(frozen=True, slots=True)
class SkewConfig:
    window: int = 30  # newest offsets per tag the median is taken over
    min_samples: int = 5  # a tag's median counts once it has this many
    threshold_s: float = 1.0
    reference_group: str | None = None  # a trusted clock (e.g. the NTP-synced PLC); None: all tags
    eval_every_s: float = 5.0  # medians are re-taken at most this often (arrival time)


class ClockSkewDetector:
    """Per tag and per source group: offset = arrival time - source timestamp (same time base).

    Each tag's offset is the median of its newest `window` samples (robust to jitter and single
    late deliveries); a group's is the median of its tags'. The reference is the median over
    all tags' offsets (or over the `reference_group`'s), so a common offset such as network
    delay cancels. Two groups alone cannot say which of them is off, which is why the majority
    of tags rather than a median of group offsets sets the reference. A tag or group deviating by
    more than `threshold_s` raises "clock_skew". A backlog replayed after an outage looks skewed
    too while it dominates a tag's window: feed only live samples.
    """

    def __init__(
        self, tag_names: Sequence[str], groups: Sequence[str], config: SkewConfig | None = None
    ) -> None:
        self.tag_names = list(tag_names)
        n = len(self.tag_names)
        if len(groups) != n:
            raise ValueError("groups needs one entry per tag")
        self.config = config or SkewConfig()
        self.group_names = sorted(set(groups))
        self.group_of = np.array([self.group_names.index(g) for g in groups], np.int64)
        ref = self.config.reference_group
        if ref is not None and ref not in self.group_names:
            raise ValueError(f"reference group {ref!r} has no tags")
        w = self.config.window
        self.ring = np.full((n, w), np.nan)
        self.head = np.zeros(n, np.int64)
        self.filled = np.zeros(n, np.int64)
        self.arrival_now = -math.inf
        self._dirty = False
        self._evaluated_at = -math.inf
        self._conditions: Conditions = {}

    def update(self, tag: np.ndarray, t_source: np.ndarray, t_arrival: float | np.ndarray) -> None:
        """One tick: tag index and source timestamp per sample, arrival time (scalar or per sample)."""
        tag = np.ascontiguousarray(tag, np.int64)
        arrival = np.asarray(t_arrival, np.float64)
        offset = np.ascontiguousarray(np.broadcast_to(arrival - np.asarray(t_source, np.float64), tag.shape))
        ring_push(tag, offset, self.ring, self.head, self.filled)
        if arrival.size and np.isfinite(arrival).any():
            self.arrival_now = max(self.arrival_now, float(np.nanmax(arrival)))
        self._dirty = True

    def tag_offsets(self) -> np.ndarray:
        """Median offset per tag (NaN until it has `min_samples`)."""
        out = np.full(len(self.tag_names), np.nan)
        full = self.filled == self.config.window
        part = (self.filled >= self.config.min_samples) & ~full
        if full.any():  # no NaN in a full ring: the plain median is much cheaper
            out[full] = np.median(self.ring[full], axis=1)
        if part.any():
            out[part] = np.nanmedian(self.ring[part], axis=1)
        return out

    def _reference(self, tag_off: np.ndarray) -> float:
        ref = self.config.reference_group
        pool = tag_off if ref is None else tag_off[self.group_of == self.group_names.index(ref)]
        pool = pool[np.isfinite(pool)]
        return float(np.median(pool)) if len(pool) else math.nan

    def deviations(self) -> tuple[np.ndarray, np.ndarray]:
        """(per-tag, per-group) median offset minus the reference, seconds (NaN: not known yet)."""
        tag_off = self.tag_offsets()
        reference = self._reference(tag_off)
        group_off = np.full(len(self.group_names), np.nan)
        for g in range(len(self.group_names)):
            vals = tag_off[(self.group_of == g) & np.isfinite(tag_off)]
            if len(vals):
                group_off[g] = np.median(vals)
        return tag_off - reference, group_off - reference

    def conditions(self) -> Conditions:
        """What holds now; re-evaluated when new samples came and `eval_every_s` has passed."""
        if self._dirty and self.arrival_now - self._evaluated_at >= self.config.eval_every_s:
            self._conditions = self._evaluate()
            self._evaluated_at = self.arrival_now
            self._dirty = False
        return dict(self._conditions)

    def _evaluate(self) -> Conditions:
        out: Conditions = {}
        limit = self.config.threshold_s
        tag_dev, group_dev = self.deviations()
        with np.errstate(invalid="ignore"):
            skewed_groups = np.flatnonzero(np.abs(group_dev) > limit)
            skewed_tags = np.flatnonzero(np.abs(tag_dev) > limit)
        for g in skewed_groups:
            name = self.group_names[g]
            key, cond = _condition(
                CLOCK_SKEW,
                name,
                Severity.WARNING,
                f"{name}: source clocks {-group_dev[g]:+.1f} s off the plant's common time; "
                "check NTP on this source (the yield aligns by source timestamps)",
            )
            out[key] = cond
        for k in skewed_tags:
            name = self.tag_names[k]
            key, cond = _condition(
                CLOCK_SKEW,
                name,
                Severity.WARNING,
                f"{name}: timestamps {-tag_dev[k]:+.1f} s off the plant's common time; check the "
                "device's clock / NTP (the yield aligns by source timestamps)",
            )
            out[key] = cond
        return out


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the detectors' numba kernels."""
    i64, f64 = np.zeros(0, np.int64), np.zeros(0, np.float64)
    stuck_update(i64, f64, f64, 0.0, np.zeros(0, np.bool_), f64, f64, f64, i64, f64, f64, f64)
    ring_push(i64, f64, np.zeros((0, 1)), i64, i64)


# --------------------------------------------------------------------------------------------
# Wrong delay (the tracker lives elsewhere; the text lives here)


def wrong_delay_conditions(subject: str, flag: bool, tau_est_s: float, tau_cfg_s: float) -> Conditions:
    """The "wrong_delay" condition for a delay tracker's verdict (empty when `flag` is False)."""
    if not flag:
        return {}
    rel = (tau_est_s - tau_cfg_s) / tau_cfg_s if tau_cfg_s > 0 else math.inf
    key, cond = _condition(
        WRONG_DELAY,
        subject,
        Severity.WARNING,
        f"{subject}: measured feed-to-black-mass delay {tau_est_s / 60:.0f} min vs configured "
        f"{tau_cfg_s / 60:.0f} min ({rel:+.0%}); check dryer hold-up and conveyor speeds, then "
        "update transport_delay_min (lot assignment and short windows are off meanwhile)",
    )
    return {key: cond}
