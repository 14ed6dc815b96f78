"""Streaming fault detectors that turn conditioned signals into named alarm conditions.

Each detector is fed plant time and a tick's worth of numbers through `update(...)` and states
what holds now through `conditions()`, as `{alarm_id: (kind, subject, Severity, text)}` for
`gateway.alarms.AlarmBoard` (the same shape as `YieldPipeline.alarm_conditions`). Nothing here
does I/O or reads a clock, so a run is reproducible from its inputs. Every alarm text of the
detectors lives in this module (the drift detector's in its own), and each tells the operator
what to do.

Detectors (domain.md section 3, "Failure modes that corrupt Y"):
- `StuckDetector`: a value that stops moving, or a source timestamp that stops advancing, while
  the process is active (numba kernel `stuck_update`, one pass over a tick's samples).
- `SpikeCounter`: spikes flagged by the conditioning kernel, counted per tag over the last hour.
- belt-weigher zero and span drift against a reference scale: `gateway.drift_detector`, which
  uses this module's condition shape.
- `TotalizerEvents`: rollovers, resets and implausible jumps flagged by the conditioning kernel.
- `ClockSkewDetector`: source timestamps off the plant's common time, per tag and per group.
- `wrong_delay_conditions`: the text for the delay tracker's verdict.
"""

from __future__ import annotations

import math
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


def alarm_condition(kind: str, subject: str, severity: Severity, text: str) -> tuple[str, Condition]:
    return alarm_id(kind, subject), (kind, subject, severity, text)


def balance_severity(balance: bool) -> Severity:
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

    def any_suspect(self, tags: Sequence[int]) -> bool:
        """Is any of `tags` stuck or its timestamp frozen? (`value_stuck` or `timestamp_frozen`
        for a few tags, asked every tick, without building the arrays of all tags.)"""
        c, s = self.config, self.state
        for k in tags:
            if not self.active[k]:
                continue
            run = int(s.run_n[k])
            if c.window_samples > 0 and run >= c.window_samples:
                return True
            if c.window_s > 0 and run >= 2 and s.last_t[k] - s.run_t0[k] >= c.window_s:
                return True
            if c.timestamp_window_s > 0 and s.arrival_now[k] - s.advance_now[k] >= c.timestamp_window_s:
                return True
        return False

    def conditions(self) -> Conditions:
        out: Conditions = {}
        s = self.state
        frozen = self.timestamp_frozen()
        for k in np.flatnonzero(frozen):
            name = self.tag_names[k]
            age = s.arrival_now[k] - s.advance_now[k]
            key, cond = alarm_condition(
                STUCK_SENSOR,
                name,
                balance_severity(bool(self.balance[k])),
                f"{name}: source timestamp frozen for {age:.0f} s while the process runs; "
                "check the PLC/server sampling of this item (value excluded from the balance)",
            )
            out[key] = cond
        for k in np.flatnonzero(self.value_stuck() & ~frozen):
            name = self.tag_names[k]
            span = s.last_t[k] - s.run_t0[k]
            key, cond = alarm_condition(
                STUCK_SENSOR,
                name,
                balance_severity(bool(self.balance[k])),
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
            key, cond = alarm_condition(
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
        if not len(tag):
            return
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
            key, cond = alarm_condition(
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
            key, cond = alarm_condition(
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
            key, cond = alarm_condition(
                CLOCK_SKEW,
                name,
                Severity.WARNING,
                f"{name}: source clocks {-group_dev[g]:+.1f} s off the plant's common time; "
                "check NTP on this source (the yield aligns by source timestamps)",
            )
            out[key] = cond
        for k in skewed_tags:
            name = self.tag_names[k]
            key, cond = alarm_condition(
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
    key, cond = alarm_condition(
        WRONG_DELAY,
        subject,
        Severity.WARNING,
        f"{subject}: measured feed-to-black-mass delay {tau_est_s / 60:.0f} min vs configured "
        f"{tau_cfg_s / 60:.0f} min ({rel:+.0%}); check dryer hold-up and conveyor speeds, then "
        "update transport_delay_min (lot assignment and short windows are off meanwhile)",
    )
    return {key: cond}
