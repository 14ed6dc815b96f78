"""Fault detectors on seeded synthetic streams that reproduce the scenario faults (domain.md
section 4: S3, S5, S6, S7, S10, S11) at their size and timing, plus property tests.

The belt-weigher streams follow the simulator's weigher model: the rate tag carries 3 % white
noise per 1 Hz sample, the totalizer integrates the load exactly (times its span error, plus its
zero error), and the reference (the airlock item scale) weighs each one-minute batch with 0.1 %
noise. Each seed draws a fixed span error N(0, 0.4 %) the detector must learn, not alarm on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import detectors
from gateway.alarms import AlarmBoard, Severity
from gateway.detectors import (
    CLOCK_SKEW,
    FLAG_IMPLAUSIBLE,
    FLAG_RESET,
    FLAG_ROLLOVER,
    FLAG_SPIKE,
    SPAN_DRIFT,
    SPIKE,
    STUCK_SENSOR,
    TOTALIZER_RESET,
    TOTALIZER_ROLLOVER,
    WRONG_DELAY,
    ZERO_DRIFT,
    ClockSkewDetector,
    SkewConfig,
    SpikeCounter,
    StuckConfig,
    StuckDetector,
    StuckState,
    TotalizerEvents,
    stuck_update,
    wrong_delay_conditions,
)
from gateway.drift_detector import Cusum, DriftConfig, ZeroDriftDetector

T0 = 1_750_000_020.0  # plant epoch seconds, on a minute boundary
SEEDS = range(20)


# ------------------------------------------------------------------------------------------
# CUSUM


@given(st.lists(st.floats(-20, 20, allow_nan=False), max_size=300), st.floats(0.0, 2.0))
@settings(max_examples=200, deadline=None)
def test_cusum_sums_are_never_negative_and_equal_lindley_without_alarm(zs: list[float], k: float) -> None:
    c = Cusum(k=k, h=math.inf, cap=math.inf)
    hi, lo = [], []
    for z in zs:
        c.update(z)
        assert c.s_hi >= 0.0
        assert c.s_lo >= 0.0
        hi.append(c.s_hi)
        lo.append(c.s_lo)
    # Lindley: S_n = C_n - min_{j<=n} C_j with C the cumulative sum of (z - k), C_0 = 0.
    x = np.asarray(zs, np.float64)
    for got, incr in ((hi, x - k), (lo, -x - k)):
        cum = np.concatenate(([0.0], np.cumsum(incr)))
        want = (cum - np.minimum.accumulate(cum))[1:]
        np.testing.assert_allclose(got, want, atol=1e-9 * (1 + np.abs(cum).max()))


@given(st.lists(st.floats(-20, 20, allow_nan=False), max_size=300))
@settings(max_examples=200, deadline=None)
def test_cusum_capped_sums_stay_within_bounds_while_alarmed(zs: list[float]) -> None:
    c = Cusum()
    for z in zs:
        d = c.update(z)
        assert c.s_hi >= 0.0
        assert c.s_lo >= 0.0
        if d != 0:
            assert max(c.s_hi, c.s_lo) <= c.cap
            assert (c.s_hi if d > 0 else c.s_lo) > 0


def test_cusum_raises_on_a_shift_latches_and_clears_after_the_residual_returns() -> None:
    c = Cusum()
    assert [c.update(0.0) for _ in range(50)] == [0] * 50
    # A 2-sigma shift passes h = 5 on the 4th update: 1.5 per update.
    assert [c.update(2.0) for _ in range(4)] == [0, 0, 0, 1]
    assert c.run == 4
    for _ in range(30):
        c.update(2.0)
    assert c.s_hi == c.cap
    # Back at the baseline it drains by k = 0.5 per update: cap / k = 20 updates.
    states = [c.update(0.0) for _ in range(20)]
    assert states[:19] == [1] * 19
    assert states[19] == 0
    c.update(-3.0)
    c.reset()
    assert (c.s_hi, c.s_lo, c.direction) == (0.0, 0.0, 0)
    assert c.update(math.nan) == 0


# ------------------------------------------------------------------------------------------
# Stuck


def stuck_reference(
    t: np.ndarray, value: np.ndarray, t_now: np.ndarray, active: np.ndarray, tol: float
) -> tuple[float, float, int, float, float, float]:
    """Final (last_t, last_value, run_n, run_t0, advance_now, arrival_now) of ONE tag's whole
    history, from vector operations (running max for advancing times, run starts by index)."""
    nan = math.nan
    ok = np.isfinite(t) & np.isfinite(value)
    t, value, t_now, active = t[ok], value[ok], t_now[ok], active[ok]
    if not len(t):
        return -math.inf, nan, 0, nan, nan, nan
    arrival = float(t_now[-1])
    before = np.maximum.accumulate(np.concatenate(([-np.inf], t)))[:-1]
    adv = t > before
    if not adv.any():
        return -math.inf, nan, 0, nan, nan, arrival
    t, value, t_now, active = t[adv], value[adv], t_now[adv], active[adv]
    prev_active = np.concatenate(([False], active[:-1]))
    step = np.abs(np.diff(value, prepend=np.nan))
    flat = active & prev_active & (step <= tol)
    idx = np.arange(len(t))
    start = np.maximum.accumulate(np.where(flat, 0, idx))
    if active[-1]:
        run_n, run_t0 = int(idx[-1] - start[-1] + 1), float(t[start[-1]])
    else:
        run_n, run_t0 = 0, nan
    return float(t[-1]), float(value[-1]), run_n, run_t0, float(t_now[-1]), arrival


@st.composite
def stuck_histories(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(1, 200))
    tag = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    # Mostly advancing times, with repeats (frozen timestamps) and steps back.
    steps = draw(st.lists(st.sampled_from([1.0, 1.0, 1.0, 0.0, -3.0, 0.5]), min_size=n, max_size=n))
    t = T0 + np.cumsum(steps)
    # Few distinct values so that exact repeats and near-repeats happen often.
    value = np.array(
        draw(
            st.lists(
                st.one_of(st.sampled_from([1.0, 1.0, 1.05, 2.0]), st.just(math.nan)),
                min_size=n,
                max_size=n,
            )
        )
    )
    active = np.array(draw(st.lists(st.booleans(), min_size=4, max_size=4)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return tag, t, value, active, np.array(cuts, np.int64)


@given(stuck_histories(), st.permutations(range(4)))
@settings(max_examples=200, deadline=None)
def test_stuck_kernel_equals_reference_in_any_chunking_and_tag_order(
    hist: tuple[np.ndarray, ...], perm: list[int]
) -> None:
    tag, t, value, active_per_chunk, cuts = hist
    tol = np.array([0.1, 0.0, 0.1, np.nan])
    chunks = np.split(np.arange(len(tag)), cuts)
    st_ = StuckState.new(4)
    # Per tick: plant time is the tick's newest sample time; activity alternates per tick.
    t_now_per_sample = np.empty(len(tag))
    active_per_sample = np.empty(len(tag), np.bool_)
    for j, idx in enumerate(chunks):
        t_now = float(t[idx].max()) if len(idx) else T0
        act = np.roll(active_per_chunk, j)
        stuck_update(
            tag[idx], t[idx], value[idx], t_now, act, tol,
            st_.last_t, st_.last_value, st_.run_n, st_.run_t0, st_.advance_now, st_.arrival_now,
        )  # fmt: skip
        t_now_per_sample[idx] = t_now
        active_per_sample[idx] = act[tag[idx]]
    for k in range(4):
        sel = tag == k
        want = stuck_reference(t[sel], value[sel], t_now_per_sample[sel], active_per_sample[sel], tol[k])
        got = (
            st_.last_t[k], st_.last_value[k], st_.run_n[k], st_.run_t0[k],
            st_.advance_now[k], st_.arrival_now[k],
        )  # fmt: skip
        np.testing.assert_array_equal(np.array(got, np.float64), np.array(want, np.float64))
    # Relabelling the tags permutes the per-tag results and changes nothing else.
    p = np.array(perm)
    st_p = StuckState.new(4)
    for j, idx in enumerate(chunks):
        t_now = float(t[idx].max()) if len(idx) else T0
        act = np.roll(active_per_chunk, j)
        act_p = np.empty(4, np.bool_)
        act_p[p] = act
        tol_p = np.empty(4)
        tol_p[p] = tol
        stuck_update(
            p[tag[idx]], t[idx], value[idx], t_now, act_p, tol_p,
            st_p.last_t, st_p.last_value, st_p.run_n, st_p.run_t0, st_p.advance_now, st_p.arrival_now,
        )  # fmt: skip
    for name in ("last_t", "last_value", "run_n", "run_t0", "advance_now", "arrival_now"):
        np.testing.assert_array_equal(getattr(st_p, name)[p], getattr(st_, name))


@dataclass
class Signal:
    name: str
    noise_floor: float
    values: np.ndarray  # one per second from T0


def one_hertz_signals(seed: int, seconds: int) -> list[Signal]:
    rng = np.random.default_rng(seed)
    s = np.arange(seconds)
    rate = 1.7 * (1 + 0.03 * rng.standard_normal(seconds))
    o2 = 1.0 + 0.3 * np.sin(s / 400) + 0.05 * rng.standard_normal(seconds)
    # Quantised to 0.1 with noise of half a quantum: repeats are common, yet it moves.
    temp = np.round((60 + 0.5 * np.sin(s / 900) + 0.05 * rng.standard_normal(seconds)) / 0.1) * 0.1
    # A slow ramp quantised to 1: one step every 10 s and nothing in between.
    level = np.round(s / 10.0)
    return [
        Signal("bw_feed.rate", 0.03 * 1.7, rate),
        Signal("shr.o2_a", 0.05, o2),
        Signal("dry.product_temp", 0.05, temp),
        Signal("bin_fe.level", 0.3, level),
    ]


def run_stuck(
    signals: list[Signal],
    active: np.ndarray,
    config: StuckConfig | None = None,
    frozen_stamp_from: float = math.inf,
    tick_s: int = 1,
) -> list[tuple[float, dict]]:
    """Feed 1 Hz samples in ticks of `tick_s` seconds; the conditions after each tick."""
    det = StuckDetector(
        [s.name for s in signals],
        np.array([s.noise_floor for s in signals]),
        balance=np.array([s.name.startswith("bw_") for s in signals]),
        config=config,
    )
    n = len(signals[0].values)
    values = np.stack([s.values for s in signals], axis=1)  # [second, tag]
    out = []
    for i in range(0, n, tick_s):
        secs = np.arange(i, min(i + tick_s, n))
        tag = np.tile(np.arange(len(signals), dtype=np.int64), len(secs))
        stamps = np.repeat(T0 + secs.astype(np.float64), len(signals))
        # The first tag's source clock may freeze while its samples keep coming.
        stamps[tag == 0] = np.minimum(stamps[tag == 0], T0 + frozen_stamp_from)
        now = T0 + float(secs[-1])
        det.update(tag, stamps, values[secs].ravel(), now, bool(active[secs[-1]]))
        # The per-tick question of the fault monitor agrees with the arrays, tag by tag.
        suspect = det.value_stuck() | det.timestamp_frozen()
        assert [det.any_suspect([k]) for k in range(len(signals))] == suspect.tolist()
        out.append((now, det.conditions()))
    return out


def first_time(history: list[tuple[float, dict]], key: str) -> float | None:
    return next((t for t, c in history if key in c), None)


def test_stuck_feed_rate_is_detected_within_60_s_while_active_and_clears_when_it_moves() -> None:
    signals = one_hertz_signals(seed=5, seconds=3 * 3600)
    t_stuck, t_free = 6000, 6000 + 3600  # S5: frozen at its last value for an hour
    signals[0].values[t_stuck:t_free] = signals[0].values[t_stuck - 1]
    signals[1].values[t_free + 100 : t_free + 400] = signals[1].values[t_free + 99]
    history = run_stuck(signals, np.ones(3 * 3600, bool))
    key = "stuck_sensor:bw_feed.rate"
    raised = first_time(history, key)
    assert raised is not None
    assert 0 < raised - (T0 + t_stuck) < 60
    kind, subject, severity, text = history[t_stuck + 100][1][key]
    assert (kind, subject, severity) == (STUCK_SENSOR, "bw_feed.rate", Severity.ALARM)
    assert "stuck" in text
    assert "check" in text
    # Clears with the first moving sample, and nothing else was ever called stuck.
    assert key not in history[t_free][1]
    assert all(key in c for _t, c in history[t_stuck + 60 : t_free])
    o2 = "stuck_sensor:shr.o2_a"
    assert 0 < first_time(history, o2) - (T0 + t_free + 99) < 60
    assert history[t_free + 200][1][o2][2] is Severity.WARNING
    others = {k for _t, c in history for k in c} - {key, o2}
    assert others == set()


def test_stuck_is_not_raised_on_quantised_moving_signals_over_24_h_across_seeds() -> None:
    for seed in range(3):
        history = run_stuck(one_hertz_signals(seed, 24 * 3600), np.ones(24 * 3600, bool), tick_s=10)
        assert all(not c for _t, c in history), seed


def test_stuck_is_not_raised_while_idle_and_is_raised_once_the_process_runs() -> None:
    signals = one_hertz_signals(seed=1, seconds=4000)
    signals[0].values[1000:3000] = 0.0  # belt stopped: the rate sits at exactly 0
    active = np.ones(4000, bool)
    active[1000:2000] = False
    history = run_stuck(signals, active)
    key = "stuck_sensor:bw_feed.rate"
    assert all(key not in c for _t, c in history[:2000])
    # Running again, but the rate still reads a flat 0: stuck within the window.
    assert 0 < first_time(history, key) - (T0 + 2000) < 60


def test_frozen_source_timestamp_is_stuck_while_samples_keep_arriving() -> None:
    signals = one_hertz_signals(seed=2, seconds=600)
    history = run_stuck(signals, np.ones(600, bool), frozen_stamp_from=300)
    key = "stuck_sensor:bw_feed.rate"
    raised = first_time(history, key)
    assert raised is not None
    assert 0 < raised - (T0 + 300) < 60
    assert "timestamp" in history[-1][1][key][3]


# ------------------------------------------------------------------------------------------
# Spikes


def spike_stream(seed: int, seconds: int, rates: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1 Hz samples of len(rates) tags; tag k flagged as a spike with probability rates[k]."""
    rng = np.random.default_rng(seed)
    n_tags = len(rates)
    tag = np.tile(np.arange(n_tags, dtype=np.int64), seconds)
    t = np.repeat(T0 + np.arange(seconds, dtype=np.float64), n_tags)
    flags = (rng.random(len(tag)) < np.asarray(rates)[tag]).astype(np.int64) * FLAG_SPIKE
    flags |= 4 * (rng.random(len(tag)) < 0.01)  # other bits do not count
    return tag, t, flags


def test_spike_alarm_for_a_spiky_sensor_but_not_for_s3_rates_and_it_expires() -> None:
    names = ["bw_feed.rate", "bm.rate", "shr.power"]
    # S3: 1 in 1,000 samples, plus the Hampel filter's own false flags (~0.3 %); a sensor gone bad.
    tag, t, flags = spike_stream(seed=3, seconds=3 * 3600, rates=[0.001, 0.004, 0.08])
    counter = SpikeCounter(names)
    ticks = np.array_split(np.arange(len(tag)), 3 * 3600 // 5)
    seen: set[str] = set()
    for idx in ticks:
        counter.update(tag[idx], t[idx], flags[idx])
        seen |= set(counter.conditions())
    assert seen == {"spike:shr.power"}
    counts = counter.counts_last_hour()
    assert counts[2] == pytest.approx(0.08 * 3600, rel=0.15)
    assert counter.samples_last_hour().tolist() == [3600] * 3
    assert counter.spikes_total.tolist() == np.bincount(tag[(flags & FLAG_SPIKE) != 0], minlength=3).tolist()
    kind, subject, severity, _text = counter.conditions()["spike:shr.power"]
    assert (kind, subject, severity) == (SPIKE, "shr.power", Severity.WARNING)
    # An hour of clean samples later, the alarm is gone.
    end = float(t[-1])
    clean_t = end + 1 + np.arange(3600, dtype=np.float64)
    for chunk in np.array_split(clean_t, 60):
        counter.update(np.full(len(chunk), 2, np.int64), chunk, np.zeros(len(chunk), np.int64))
    assert counter.conditions() == {}
    assert counter.counts_last_hour()[2] == 0


@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(0, 7200), st.booleans()), max_size=150),
    st.integers(1, 5),
    st.permutations(range(4)),
)
@settings(max_examples=200, deadline=None)
def test_spike_counts_do_not_depend_on_chunking_or_tag_order(
    samples: list[tuple[int, float, bool]], chunks: int, perm: list[int]
) -> None:
    samples.sort(key=lambda s: s[1])  # plant time moves forward tick by tick
    tag = np.array([s[0] for s in samples], np.int64)
    t = T0 + np.array([s[1] for s in samples], np.float64)
    flags = np.array([FLAG_SPIKE if s[2] else 0 for s in samples], np.int64)
    whole = SpikeCounter(["a", "b", "c", "d"])
    whole.update(tag, t, flags)
    parts = SpikeCounter(["a", "b", "c", "d"])
    p = np.array(perm)
    for idx in np.array_split(np.arange(len(tag)), chunks):
        parts.update(p[tag[idx]], t[idx], flags[idx], t_now=float(t[idx].max()) if len(idx) else None)
    np.testing.assert_array_equal(parts.counts_last_hour()[p], whole.counts_last_hour())
    np.testing.assert_array_equal(parts.samples_last_hour()[p], whole.samples_last_hour())
    # The window is the last hour: every sample counted is at most 60 minutes old.
    if len(t):
        newest = math.floor(t.max() / 60)
        in_window = np.floor(t / 60) > newest - 60
        assert whole.samples_last_hour().sum() == in_window.sum()
        assert whole.counts_last_hour().sum() == (in_window & (flags != 0)).sum()


# ------------------------------------------------------------------------------------------
# Belt-weigher zero and span drift


@dataclass
class WeigherStream:
    t_end: np.ndarray  # end of each minute, plant seconds
    belt_t: np.ndarray  # belt totalizer increment per minute
    ref_t: np.ndarray  # reference (airlock batches) per minute
    empty: np.ndarray  # the belt ran empty this minute
    empty_rate_sum: np.ndarray  # sum of the 60 rate samples of an empty minute


def weigher_stream(
    seed: int,
    hours: float,
    *,
    zero_onset_h: float | None = None,
    span_onset_h: float | None = None,
    rate_steps: bool = False,
    empty_every_h: float | None = None,
    ref_noise_per_minute: float = 0.001,
    rate_noise_in_total: bool = False,
) -> WeigherStream:
    """S6 / S7 on a 1.7 t/h feed: zero +0.025 t/h (1 % of Qmax 2.5) ramped in over 8 h, span
    -2 % ramped in over 8 h. `rate_steps`: the feed alternates 1.0 / 2.2 t/h every 30 min.
    `empty_every_h`: the last 5 minutes of every such period the belt runs empty."""
    rng = np.random.default_rng(seed)
    n = int(hours * 60)
    minute = np.arange(n, dtype=np.float64)
    t_mid = T0 + 60.0 * minute + 30.0
    surge = np.empty(n)
    a, s = math.exp(-1.0), 0.0
    for i, e in enumerate(rng.standard_normal(n)):
        s = a * s + 0.05 * math.sqrt(1 - a * a) * e
        surge[i] = s
    rate = np.where((minute // 30) % 2 == 0, 1.0, 2.2) if rate_steps else np.full(n, 1.7)
    rate = rate * (1 + surge)
    empty = np.zeros(n, np.bool_)
    if empty_every_h is not None:
        period = round(empty_every_h * 60)
        empty = minute % period >= period - 5
    rate[empty] = 0.0
    gain = np.full(n, 1.0 + 0.004 * float(np.clip(rng.standard_normal(), -4, 4)))
    zero = np.zeros(n)
    if zero_onset_h is not None:
        zero = 0.025 * np.clip((t_mid - T0 - zero_onset_h * 3600) / (8 * 3600), 0, 1)
    if span_onset_h is not None:
        gain = gain * (1 - 0.02 * np.clip((t_mid - T0 - span_onset_h * 3600) / (8 * 3600), 0, 1))
    true_t = rate / 60.0
    belt_t = gain * true_t + zero / 60.0
    if rate_noise_in_total:  # worst case: the totalizer integrates the rate's white noise
        belt_t = belt_t + 0.03 * rate / 3600.0 * math.sqrt(60.0) * rng.standard_normal(n)
    ref_t = true_t * (1 + ref_noise_per_minute * rng.standard_normal(n))
    empty_rate_sum = 60.0 * zero + 0.0125 * math.sqrt(60.0) * rng.standard_normal(n)
    return WeigherStream(t_mid + 30.0, belt_t, ref_t, empty, empty_rate_sum)


def drift_config(**kw: float) -> DriftConfig:
    # No prior sigma: the detector learns each stream's block noise from its healthy blocks.
    return DriftConfig(**kw)


def run_drift(
    stream: WeigherStream, config: DriftConfig
) -> tuple[list[tuple[float, str]], ZeroDriftDetector]:
    """(plant time, kind) after every minute an alarm holds, and the detector at the end."""
    det = ZeroDriftDetector("bw_feed.rate", "feed.item_mass", config)
    out = []
    for i, t in enumerate(stream.t_end):
        if stream.empty[i]:
            det.update_empty(float(t), float(stream.empty_rate_sum[i]), 60)
        else:
            det.update_balance(float(t), float(stream.belt_t[i]), float(stream.ref_t[i]))
        for kind, *_rest in det.conditions().values():
            out.append((float(t), kind))
    return out, det


def first_alarm_h(alarms: list[tuple[float, str]], onset_h: float, kinds: set[str]) -> float:
    hits = [t for t, k in alarms if k in kinds and t >= T0 + onset_h * 3600]
    return (min(hits) - T0) / 3600 - onset_h if hits else math.inf


def test_no_drift_alarm_over_24_h_without_a_fault_across_20_seeds() -> None:
    false_alarms = {}
    for seed in SEEDS:
        for worst_case in (False, True):
            cfg = drift_config()
            alarms, det = run_drift(weigher_stream(seed, 24, rate_noise_in_total=worst_case), cfg)
            false_alarms[(seed, worst_case)] = len({t for t, _k in alarms})
            # The seed's fixed span error was learned, not alarmed on.
            assert det.estimate().kind is None
    per_24h = sum(false_alarms.values()) / len(false_alarms)
    print(f"false drift alarm-minutes per 24 h over {len(false_alarms)} runs: {per_24h}")
    assert per_24h == 0


def test_zero_drift_ramp_alarms_within_2_h_of_onset_across_20_seeds() -> None:
    delays = []
    for seed in SEEDS:
        alarms, _det = run_drift(weigher_stream(seed, 8, zero_onset_h=4), drift_config())
        delays.append(first_alarm_h(alarms, 4, {ZERO_DRIFT, SPAN_DRIFT}))
        assert not any(t < T0 + 4 * 3600 for t, _k in alarms)
    print(f"S6 zero ramp: detection delay median {np.median(delays):.2f} h, worst {max(delays):.2f} h")
    assert max(delays) < 2.0


def test_zero_drift_on_strict_reference_noise_and_noisy_totals_is_reported() -> None:
    """Harder readings of the same S6 stream: 0.1 % noise on each 10-minute reference total,
    or the totalizer integrating the rate's 3 % white noise. At 2 h the drift is 0.37 % of the
    rate, about 2 sigma per interval: detection then takes about 1.7-2 h in the median and some
    seeds need more than 2 h; that is the information in the data, not the detector's tuning."""
    strict, noisy = [], []
    for seed in SEEDS:
        alarms, _ = run_drift(
            weigher_stream(seed, 8, zero_onset_h=4, ref_noise_per_minute=0.001 * math.sqrt(10)),
            drift_config(),
        )
        strict.append(first_alarm_h(alarms, 4, {ZERO_DRIFT, SPAN_DRIFT}))
        alarms, _ = run_drift(
            weigher_stream(seed, 8, zero_onset_h=4, rate_noise_in_total=True),
            drift_config(),
        )
        noisy.append(first_alarm_h(alarms, 4, {ZERO_DRIFT, SPAN_DRIFT}))
    for name, d in (("strict reference", strict), ("noisy totalizer", noisy)):
        print(
            f"S6 {name}: median {np.median(d):.2f} h, worst {max(d):.2f} h, >2 h: {sum(x > 2 for x in d)}/20"
        )
    assert np.median(strict) <= 2.0
    assert max(strict) <= 2.5
    assert np.median(noisy) <= 2.5
    assert max(noisy) <= 3.0


def test_span_drift_alarms_within_8_h_and_is_called_span() -> None:
    delays = []
    for seed in SEEDS:
        alarms, det = run_drift(weigher_stream(seed, 10, span_onset_h=2), drift_config())
        delays.append(first_alarm_h(alarms, 2, {SPAN_DRIFT}))
        assert {k for _t, k in alarms} == {SPAN_DRIFT}
        est = det.estimate()
        # At 10 h the span is 2 % below the seed's own: the factor relative to the baseline.
        assert est.span_factor / est.baseline_factor == pytest.approx(0.98, abs=0.003)
        assert est.zero_tph == 0.0
    print(f"S7 span -2 %: detection delay median {np.median(delays):.2f} h, worst {max(delays):.2f} h")
    assert max(delays) < 8.0


def test_zero_drift_is_called_zero_with_empty_belt_evidence_and_estimated() -> None:
    for seed in range(5):
        stream = weigher_stream(seed, 12, zero_onset_h=4, empty_every_h=0.5)
        alarms, det = run_drift(stream, drift_config())
        assert first_alarm_h(alarms, 4, {ZERO_DRIFT}) < 2.0
        assert alarms[-1][1] == ZERO_DRIFT
        est = det.estimate()
        assert est.kind == ZERO_DRIFT
        assert est.zero_tph == pytest.approx(0.025, abs=0.003)
        (kind, subject, severity, text) = next(iter(det.conditions().values()))
        assert (kind, subject, severity) == (ZERO_DRIFT, "bw_feed.rate", Severity.ALARM)
        assert "re-zero" in text
        assert "+0.02" in text


def test_rate_changes_tell_a_zero_drift_from_a_span_drift() -> None:
    for seed in range(5):
        # A zero drift under varying load: called zero once the offset is clearly rate-independent.
        alarms, det = run_drift(weigher_stream(seed, 14, zero_onset_h=4, rate_steps=True), drift_config())
        assert first_alarm_h(alarms, 4, {ZERO_DRIFT, SPAN_DRIFT}) < 2.0
        assert det.estimate().kind == ZERO_DRIFT
        assert det.estimate().zero_tph == pytest.approx(0.025, abs=0.006)
        # A span drift under the same load changes is never called zero.
        alarms, det = run_drift(weigher_stream(seed, 12, span_onset_h=2, rate_steps=True), drift_config())
        assert {k for _t, k in alarms} == {SPAN_DRIFT}


def test_acknowledge_after_recalibration_relearns_without_it_the_alarm_returns() -> None:
    stream = weigher_stream(7, 16, span_onset_h=2)
    det = ZeroDriftDetector("bw_feed.rate", "feed.item_mass", drift_config())
    kinds_after_ack = []
    acked = False
    for i, t in enumerate(stream.t_end):
        det.update_balance(float(t), float(stream.belt_t[i]), float(stream.ref_t[i]))
        if det.kind() and not acked:
            det.acknowledge(recalibrated=False)
            acked = True
            assert det.kind() is None
        elif acked:
            kinds_after_ack.append(det.kind())
    assert SPAN_DRIFT in kinds_after_ack  # the drift is still there: it comes back
    det.acknowledge(recalibrated=True)
    assert det.kind() is None
    assert det.estimate().baseline_factor == 1.0
    assert det.baseline_n == 0


@given(st.integers(0, 2**16), st.sampled_from([1.0, 1000.0]))
@settings(max_examples=10, deadline=None)
def test_drift_detector_is_deterministic_and_unit_free(seed: int, scale: float) -> None:
    stream = weigher_stream(seed, 8, span_onset_h=3)
    cfg = drift_config(min_interval_ref_t=0.02 * scale, empty_sigma_tph=0.0125 * scale)
    a = ZeroDriftDetector("bw_feed.rate", "feed.item_mass", drift_config())
    b = ZeroDriftDetector("bw_feed.rate", "feed.item_mass", cfg)
    for i, t in enumerate(stream.t_end):
        a.update_balance(float(t), float(stream.belt_t[i]), float(stream.ref_t[i]))
        b.update_balance(float(t), float(stream.belt_t[i] * scale), float(stream.ref_t[i] * scale))
        assert a.kind() == b.kind()
        assert a.loaded.s_hi == pytest.approx(b.loaded.s_hi, abs=1e-9)
        assert a.loaded.s_lo == pytest.approx(b.loaded.s_lo, abs=1e-9)
    assert a.estimate().span_factor == pytest.approx(b.estimate().span_factor, rel=1e-12)


# Batch pairs as the airlock scale closes them (gateway.weigher_reference): batches of 30-90 kg
# every 60-180 s, each boundary read off a belt totalizer with a 1 kg display and a reading
# instant off the scale's step; so a pair's error is the difference of its two boundaries'
# errors and neighbouring pairs' errors cancel (what the simulator's S0 pairs show: lag-1
# correlation about -0.5, about 0.5 kg per boundary).


@dataclass
class BatchPairs:
    t: np.ndarray  # closing boundary, plant seconds
    t_start: np.ndarray  # opening boundary (the previous pair's t while they chain)
    belt_t: np.ndarray
    ref_t: np.ndarray


def batch_pairs(
    seed: int,
    hours: float,
    *,
    zero_onset_h: float | None = None,
    boundary_kg: float = 0.3,
    own_rel: float = 0.0,
    gaps_h: tuple[tuple[float, float], ...] = (),
    edge_kg: float = 0.0,
) -> BatchPairs:
    """S0 / S6 as batch pairs. `boundary_kg`: 1-sigma of each boundary's timing error on top of
    the display step (coarse sampling reads the belt further from the step); `own_rel`: an
    independent error per pair; `gaps_h`: continuous-feed lots (no pairs), each first pair after
    one off by `edge_kg` (a lot edge's odd pair)."""
    rng = np.random.default_rng(seed)
    gain = 1.0 + 0.004 * float(np.clip(rng.standard_normal(), -4, 4))
    cycles = rng.uniform(60, 180, int(hours * 3600 / 60) + 2)
    bounds = np.concatenate(([0.0], np.cumsum(cycles)))
    bounds = bounds[bounds <= hours * 3600]
    mass_kg = rng.uniform(30, 90, len(bounds) - 1)
    true_cum = np.concatenate(([0.0], np.cumsum(mass_kg)))
    zero_cum = np.zeros(len(bounds))  # kg the zero error added up to each boundary
    if zero_onset_h is not None:
        # zero(t) = 0.025 t/h * min(1, (t - onset) / 8 h): its integral in kg.
        h = np.clip((bounds - zero_onset_h * 3600) / 3600, 0, None)
        zero_cum = 1000 * 0.025 * np.where(h < 8, h**2 / 16, 4 + (h - 8))
    belt_cum = gain * true_cum + zero_cum + boundary_kg * rng.standard_normal(len(bounds))
    belt_read = np.round(belt_cum)  # the 1 kg display
    ref_read = np.round(true_cum * 10) / 10  # the scale's 0.1 kg display
    belt = np.diff(belt_read) * (1 + own_rel * rng.standard_normal(len(mass_kg)))
    ref = np.diff(ref_read)
    t0, t1 = bounds[:-1], bounds[1:]
    keep = np.ones(len(t1), np.bool_)
    for lo, hi in gaps_h:
        keep &= ~((t1 > lo * 3600) & (t0 < hi * 3600))
    first_after = np.flatnonzero(keep[1:] & ~keep[:-1]) + 1
    belt[first_after] += edge_kg
    return BatchPairs(T0 + t1[keep], T0 + t0[keep], belt[keep] / 1000, ref[keep] / 1000)


def run_pairs(pairs: BatchPairs, config: DriftConfig | None = None) -> tuple[list[float], ZeroDriftDetector]:
    """Plant times of the pairs after which a drift alarm holds, and the detector at the end."""
    det = ZeroDriftDetector("bw_feed.total", "feed.scale_total", config)
    alarmed = []
    for i in range(len(pairs.t)):
        det.update_balance(
            float(pairs.t[i]), float(pairs.belt_t[i]), float(pairs.ref_t[i]), float(pairs.t_start[i])
        )
        if det.kind() is not None:
            alarmed.append(float(pairs.t[i]))
    return alarmed, det


def test_chained_pairs_zero_ramp_alarms_within_2_h_and_constant_span_never_across_20_seeds() -> None:
    delays, peaks = [], []
    for seed in SEEDS:
        alarmed, _ = run_pairs(batch_pairs(seed, 8, zero_onset_h=4))
        assert all(t >= T0 + 4 * 3600 for t in alarmed)
        delays.append((alarmed[0] - T0) / 3600 - 4 if alarmed else math.inf)
        # No fault, 24 h, the seed's own fixed span error: learned, never an alarm.
        alarmed, det = run_pairs(batch_pairs(seed, 24))
        assert alarmed == []
        peaks.append(max(det.loaded.s_hi, det.loaded.s_lo))
    print(f"S6 on chained pairs: delay median {np.median(delays):.2f} h, worst {max(delays):.2f} h")
    assert max(delays) < 2.0


def test_pair_noise_tells_boundary_errors_from_independent_ones() -> None:
    never = DriftConfig(h=1e9)  # the noise model alone, whatever the CUSUM would say
    for seed in range(5):
        # Boundary errors only: the display step (1/sqrt(12) kg) and 0.3 kg of reading time.
        _, det = run_pairs(batch_pairs(seed, 12), never)
        s_b, s_i = det.pair_noise()
        assert s_b * 1000 == pytest.approx(math.hypot(0.3, 1 / math.sqrt(12)), rel=0.2)
        assert s_i * 1000 < 0.15
        # 1 % independent noise per 30-90 kg pair: 0.6 kg rms, which does not cancel.
        _, det = run_pairs(batch_pairs(seed, 12, own_rel=0.01), never)
        s_b, s_i = det.pair_noise()
        assert s_b * 1000 == pytest.approx(math.hypot(0.3, 1 / math.sqrt(12)), rel=0.35)
        assert 0.3 < s_i * 1000 < 0.7  # read somewhat low: each block's mean and two s.e. come off


@pytest.mark.parametrize("boundary_kg", [3.0, 10.0])
def test_coarse_pairs_never_alarm(boundary_kg: float) -> None:
    """Coarse sampling (accelerated live runs) reads each boundary seconds off the scale's
    step: errors of several kg that still cancel between neighbours. The learned sigma widens
    with them: no alarm on S0."""
    for seed in range(10):
        alarmed, det = run_pairs(batch_pairs(seed, 24, boundary_kg=boundary_kg))
        assert alarmed == []
        s_b, _s_i = det.pair_noise()
        assert s_b * 1000 == pytest.approx(boundary_kg, rel=0.3)


def test_coarse_pairs_find_a_drift_later() -> None:
    """At 3 kg per boundary a block's sigma is about 4 kg, more once the blocks' own spread
    weighs in: the drift is found hours later than at 0.5 kg, but found."""
    delays = []
    for seed in range(10):
        alarmed, _ = run_pairs(batch_pairs(seed, 24, zero_onset_h=4, boundary_kg=3.0))
        assert all(t >= T0 + 4 * 3600 for t in alarmed)
        delays.append((alarmed[0] - T0) / 3600 - 4 if alarmed else math.inf)
    print(
        f"coarse pairs, 3 kg per boundary: delay median {np.median(delays):.2f} h, worst {max(delays):.2f} h"
    )
    assert max(delays) < 9.0


def test_independent_pair_errors_widen_the_learned_sigma_with_margin() -> None:
    """A belt totalizer integrating its 3 % rate noise adds about 0.3 % per batch that does not
    cancel between pairs: small against the boundary errors per pair (the pair model reads
    it as nothing), the larger share per block. The blocks' own spread and the spread of their
    neighbours' sums bring it in with the margin: a block sigma of 0.92 kg is standardised by
    at least 1.3 times that. (Before `min_spread_blocks` healthy blocks the pair model alone
    holds: a line with such noise wants a longer warm-up.)"""
    true_block_kg = math.sqrt(2 * (0.3**2 + 1 / 12) + 15 * (0.003 * 60) ** 2)
    for seed in range(5):
        _, det = run_pairs(batch_pairs(seed, 24, own_rel=0.003), DriftConfig(h=1e9))
        assert det.block_sigma(0.85, 0.85, 15) * 1000 > 1.3 * true_block_kg


def test_continuous_lots_break_the_chain_and_their_odd_edge_pairs_do_not_alarm() -> None:
    for seed in range(10):
        pairs = batch_pairs(seed, 24, gaps_h=((4.6, 9.0), (12.1, 15.0), (19.0, 19.3)), edge_kg=-1.0)
        alarmed, _ = run_pairs(pairs)
        assert alarmed == []
    # A drift under a continuous lot is found within the first block after it.
    pairs = batch_pairs(1, 12, zero_onset_h=4, gaps_h=((4.0, 7.0),))
    alarmed, _ = run_pairs(pairs)
    assert alarmed
    assert T0 + 7 * 3600 < alarmed[0] < T0 + 7.6 * 3600


def test_a_block_cut_short_by_a_gap_is_dropped_and_a_full_one_is_judged() -> None:
    det = ZeroDriftDetector("b", "r", DriftConfig(interval_s=600.0, warmup_intervals=1))

    def pair(t_end: float) -> None:
        det.update_balance(T0 + t_end, 0.05, 0.05, T0 + t_end - 100)

    pair(100)
    pair(200)
    pair(1000)  # opens 800 s after the last closed: a chain break cuts 200 s of block
    assert (det.blocks_dropped, det.intervals_seen) == (1, 0)
    for k in range(6):
        pair(1100 + 100 * k)  # chained: with the one at 1000 s, 600 s in all, one block
    assert (det.blocks_dropped, det.intervals_seen) == (1, 1)
    for k in range(4):
        pair(1700 + 100 * k)  # 400 s chained, then a break: more than half a block, judged
    pair(3000)
    assert (det.blocks_dropped, det.intervals_seen) == (1, 2)


# ------------------------------------------------------------------------------------------
# Totalizer events


def test_rollover_and_reset_conditions_appear_count_and_expire() -> None:
    names = ["bw_feed.total", "bm.total"]
    ev = TotalizerEvents(names)
    ev.update(np.array([0, 1]), np.array([T0, T0]), np.array([0, 0]))
    assert ev.conditions() == {}
    ev.update(
        np.array([0, 1, 1]),
        np.array([T0 + 10, T0 + 10, T0 + 11]),
        np.array([FLAG_ROLLOVER | 4, FLAG_RESET, 0]),
    )
    cond = ev.conditions()
    assert set(cond) == {"totalizer_rollover:bw_feed.total", "totalizer_reset:bm.total"}
    assert cond["totalizer_rollover:bw_feed.total"][:3] == (
        TOTALIZER_ROLLOVER,
        "bw_feed.total",
        detectors.INFO_SEVERITY,
    )
    assert "no action" in cond["totalizer_rollover:bw_feed.total"][3]
    assert cond["totalizer_reset:bm.total"][:3] == (TOTALIZER_RESET, "bm.total", Severity.WARNING)
    # A second rollover restarts the hold; an implausible jump reads as a reset-type event.
    ev.update(np.array([0, 1]), np.array([T0 + 500, T0 + 500]), np.array([FLAG_ROLLOVER, FLAG_IMPLAUSIBLE]))
    assert "jumped implausibly" in ev.conditions()["totalizer_reset:bm.total"][3]
    ev.update(np.array([0]), np.array([T0 + 10 + 900]), np.array([0]))
    assert set(ev.conditions()) == {"totalizer_rollover:bw_feed.total", "totalizer_reset:bm.total"}
    ev.update(np.array([0]), np.array([T0 + 500 + 900]), np.array([0]))
    assert ev.conditions() == {}
    assert (ev.rollovers.tolist(), ev.resets.tolist(), ev.implausible.tolist()) == ([2, 0], [0, 1], [0, 1])


# ------------------------------------------------------------------------------------------
# Clock skew


def skew_run(
    seed: int, skew_s: float, hours: float = 1.0, jitter_s: float = 0.2, config: SkewConfig | None = None
) -> tuple[list[tuple[float, dict]], list[str]]:
    """10 OPC UA tags at 1 Hz and 5 MQTT tags at 0.5 Hz; from 30 min on, three MQTT tags' clocks
    run `skew_s` ahead. Arrival = true time + 50 ms network delay + jitter."""
    rng = np.random.default_rng(seed)
    names = [f"plc.t{i}" for i in range(10)] + [
        "gas.h2",
        "gas.voc",
        "therm.hotspot_max",
        "gas.co",
        "energy.kwh",
    ]
    groups = ["opcua"] * 10 + ["mqtt"] * 5
    det = ClockSkewDetector(names, groups, config)
    out = []
    for sec in range(int(hours * 3600)):
        now = T0 + sec
        tags = np.arange(10) if sec % 2 else np.arange(15)
        stamp = np.full(len(tags), float(now))
        if sec >= 1800:
            stamp[(tags >= 10) & (tags <= 12)] += skew_s
        arrival = now + 0.05 + jitter_s * rng.standard_normal(len(tags))
        det.update(tags, stamp, arrival)
        if sec % 10 == 0:
            out.append((now, det.conditions()))
    return out, names


@pytest.mark.parametrize("skew_s", [2.0, 30.0])
def test_clock_skew_of_2_and_30_s_is_detected_on_the_skewed_tags_only(skew_s: float) -> None:
    history, _ = skew_run(seed=10, skew_s=skew_s)
    skewed = {f"clock_skew:{n}" for n in ("gas.h2", "gas.voc", "therm.hotspot_max")}
    before = [c for t, c in history if t < T0 + 1800]
    assert all(not c for c in before)
    hits = [t for t, c in history if skewed <= set(c)]
    assert hits
    assert min(hits) - (T0 + 1800) <= 60
    final = history[-1][1]
    # Three of five MQTT tags skewed: the group's median is skewed too; no OPC UA tag is.
    assert set(final) == skewed | {"clock_skew:mqtt"}
    kind, subject, severity, text = final["clock_skew:gas.h2"]
    assert (kind, subject, severity) == (CLOCK_SKEW, "gas.h2", Severity.WARNING)
    shown = float(re.search(r"timestamps ([+-][0-9.]+) s off", text).group(1))
    assert shown == pytest.approx(skew_s, abs=0.2)
    assert "NTP" in text


def test_no_clock_skew_alarm_at_0_2_s_jitter() -> None:
    for seed in range(5):
        history, _ = skew_run(seed, skew_s=0.0, jitter_s=0.2)
        assert all(not c for _t, c in history)


def test_a_whole_skewed_group_is_named_against_a_trusted_reference_group() -> None:
    names = ["plc.a", "plc.b", "mqtt.a", "mqtt.b", "mqtt.c"]
    groups = ["opcua", "opcua", "mqtt", "mqtt", "mqtt"]
    det = ClockSkewDetector(names, groups, SkewConfig(reference_group="opcua"))
    for sec in range(60):
        stamp = np.array([0.0, 0.0, 30.0, 30.0, 30.0]) + T0 + sec
        det.update(np.arange(5), stamp, T0 + sec + 0.05)
    assert set(det.conditions()) == {
        "clock_skew:mqtt",
        "clock_skew:mqtt.a",
        "clock_skew:mqtt.b",
        "clock_skew:mqtt.c",
    }


@given(
    st.lists(st.tuples(st.integers(0, 4), st.floats(-40, 40, allow_nan=False)), max_size=200),
    st.integers(1, 6),
    st.permutations(range(5)),
)
@settings(max_examples=200, deadline=None)
def test_clock_skew_does_not_depend_on_chunking_or_tag_order(
    samples: list[tuple[int, float]], chunks: int, perm: list[int]
) -> None:
    tag = np.array([s[0] for s in samples], np.int64)
    offset = np.array([s[1] for s in samples], np.float64)
    groups = ["a", "a", "b", "b", "c"]
    cfg = SkewConfig(window=7, min_samples=3)
    whole = ClockSkewDetector(list("vwxyz"), groups, cfg)
    whole.update(tag, T0 - offset, T0)
    p = np.array(perm)
    parts = ClockSkewDetector(list("vwxyz"), [groups[i] for i in np.argsort(p)], cfg)
    for idx in np.array_split(np.arange(len(tag)), chunks):
        parts.update(p[tag[idx]], T0 - offset[idx], T0)
    np.testing.assert_array_equal(parts.tag_offsets()[p], whole.tag_offsets())
    tag_dev_w, group_dev_w = whole.deviations()
    tag_dev_p, group_dev_p = parts.deviations()
    np.testing.assert_array_equal(tag_dev_p[p], tag_dev_w)
    np.testing.assert_array_equal(group_dev_p, group_dev_w)
    # Each tag's figure is the median of its newest `window` offsets.
    for k in range(5):
        mine = offset[tag == k][-7:]
        want = np.median(mine) if len(mine) >= 3 else math.nan
        np.testing.assert_allclose(whole.tag_offsets()[k], want, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Wrong delay, alarm plumbing, flag bits


def test_wrong_delay_adapter_text_and_severity() -> None:
    assert wrong_delay_conditions("yield_rolling", False, 5700.0, 3780.0) == {}
    cond = wrong_delay_conditions("yield_rolling", True, 5700.0, 3780.0)
    kind, subject, severity, text = cond["wrong_delay:yield_rolling"]
    assert (kind, subject, severity) == (WRONG_DELAY, "yield_rolling", Severity.WARNING)
    assert "95 min" in text
    assert "63 min" in text
    assert "+51%" in text
    assert "transport_delay_min" in text


def test_detector_conditions_slot_into_the_alarm_board() -> None:
    signals = one_hertz_signals(seed=0, seconds=120)
    signals[0].values[:] = 1.7
    history = run_stuck(signals, np.ones(120, bool))
    ev = TotalizerEvents(["bw_feed.total"])
    ev.update(np.array([0]), np.array([T0 + 119]), np.array([FLAG_RESET]))
    board = AlarmBoard()
    events = board.update({**history[-1][1], **ev.conditions()}, T0 + 119)
    assert [(e.alarm.kind, e.alarm.subject, e.active) for e in events] == [
        (STUCK_SENSOR, "bw_feed.rate", True),
        (TOTALIZER_RESET, "bw_feed.total", True),
    ]
    for aid in board.active:
        assert not set(aid) & set("/+#")
        assert aid.count(":") == 1


def test_flag_bits_match_the_conditioning_kernel() -> None:
    try:
        from gateway import conditioning
    except Exception:  # written alongside this module; compare once it is there
        pytest.skip("gateway.conditioning not importable yet")
    assert (FLAG_SPIKE, FLAG_ROLLOVER, FLAG_RESET, FLAG_IMPLAUSIBLE) == (
        conditioning.SPIKE,
        conditioning.ROLLOVER,
        conditioning.RESET,
        conditioning.IMPLAUSIBLE,
    )
