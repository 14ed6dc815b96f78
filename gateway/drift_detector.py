"""Belt-weigher zero and span drift against a reference scale: a CUSUM over blocks of batch pairs.

The feed belt weigher is compared with the airlock platform scale batch by batch
(`gateway.weigher_reference` pairs them). `ZeroDriftDetector` chains the pairs into blocks,
learns the blocks' noise and the belt's constant calibration offset from the healthy ones, and
runs a two-sided `Cusum` on the standardised extra belt mass of each block: a constant span error
never alarms, a change from it does (zero_drift or span_drift, domain.md section 3). Its alarm
texts live here; the condition shape is `gateway.detectors`'.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.detectors import SPAN_DRIFT, ZERO_DRIFT, Conditions, alarm_condition, balance_severity


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
        severity = balance_severity(self.balance)
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
        key, cond = alarm_condition(est.kind, self.subject, severity, text)
        return {key: cond}
