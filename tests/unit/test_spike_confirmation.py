"""The centred spike test: kernel equals reference in any chunking, and tells spikes from steps."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.conditioning import GAP, OUT_OF_ORDER, SPIKE, UNUSABLE, ChainParams, TagConditioning
from gateway.spike_confirmation import NOISE_WINDOW, SpikeConfirmation, confirm_spikes_reference

NOISE = 1.0
# Judged once both windows are full: NOISE_WINDOW differences need one reading more.
WARM = NOISE_WINDOW + 1


@st.composite
def judged_history(draw: st.DrawFn) -> tuple[ChainParams, tuple[np.ndarray, ...]]:
    """1-3 interleaved tags of noisy levels with steps, ramps, spikes (alone, in pairs, next to
    steps), quantised stretches (ties), and samples the chain flagged GAP or did not use."""
    n_tags = draw(st.integers(1, 3))
    tags = [
        TagConditioning(
            window=draw(st.sampled_from([0, 1, 3, 7, 21])),
            n_sigma=draw(st.sampled_from([3.0, 4.0])),
            s_floor=draw(st.sampled_from([0.0, 0.5, 3.0])),
            s_floor_rel=draw(st.sampled_from([0.0, 0.02])),
        )
        for _ in range(n_tags)
    ]
    n = draw(st.integers(0, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tag = rng.integers(0, n_tags, n)
    t = np.arange(n, dtype=np.float64)
    value = np.empty(n)
    for k in range(n_tags):
        idx = np.flatnonzero(tag == k)
        m = len(idx)
        steps = np.where(rng.random(m) < 0.03, rng.normal(0, 30, m), 0.0)
        slope = np.where(rng.random(m) < 0.02, rng.normal(0, 3, m), 0.0)
        x = 50.0 + np.cumsum(steps) + np.cumsum(np.cumsum(slope) * (rng.random(m) < 0.5))
        x += rng.normal(0, NOISE, m)
        x = np.where(rng.random(m) < 0.1, np.round(x), x)  # ties in the windows
        spike = rng.random(m) < 0.05
        x[spike] += rng.choice([-1, 1], spike.sum()) * rng.uniform(3, 50, spike.sum())
        value[idx] = x
    flags = rng.choice(
        np.array([0, SPIKE, GAP, UNUSABLE, OUT_OF_ORDER], np.uint8), n, p=[0.9, 0.04, 0.02, 0.02, 0.02]
    )
    return ChainParams.from_tags(tags), (tag, t, value, flags)


def _confirm_in_chunks(
    params: ChainParams, history: tuple[np.ndarray, ...], chunks: int
) -> set[tuple[int, float]]:
    tag, t, value, flags = history
    conf = SpikeConfirmation(params)
    got: set[tuple[int, float]] = set()
    for s in np.array_split(np.arange(len(tag)), chunks):
        k, ts = conf.update(tag[s], t[s], value[s], flags[s])
        got |= {(int(a), float(b)) for a, b in zip(k, ts, strict=True)}
    assert conf.confirmed.sum() == len(got)
    return got


@given(judged_history(), st.integers(1, 7))
@settings(max_examples=300, deadline=None)
def test_confirmation_equals_reference_in_any_chunking(
    case: tuple[ChainParams, tuple[np.ndarray, ...]], chunks: int
) -> None:
    params, history = case
    tag, t, value, flags = history
    assert _confirm_in_chunks(params, history, chunks) == confirm_spikes_reference(
        tag, t, value, flags, params
    )


def test_generated_histories_do_confirm_spikes() -> None:
    # The property above compares non-empty sets, not just two empty ones.
    found = 0
    for seed in range(20):
        params = ChainParams.from_tags([TagConditioning(window=7, n_sigma=4.0, s_floor=2.0)])
        rng = np.random.default_rng(seed)
        x = 50.0 + rng.normal(0, NOISE, 300)
        x[rng.random(300) < 0.03] += 30.0
        history = (np.zeros(300, np.int64), np.arange(300.0), x, np.zeros(300, np.uint8))
        found += len(confirm_spikes_reference(*history, params))
    assert found > 20


def _judge(x: np.ndarray, **kw: float) -> list[float]:
    """Times (= sample indices) confirmed as spikes in one tag's readings, in ticks of 3 samples."""
    p = TagConditioning(**({"window": 7, "n_sigma": 4.0, "s_floor": 2.0} | kw))
    n = len(x)
    history = (np.zeros(n, np.int64), np.arange(n, dtype=np.float64), x, np.zeros(n, np.uint8))
    return sorted(t for _, t in _confirm_in_chunks(ChainParams.from_tags([p]), history, max(1, n // 3)))


def _noisy(n: int, seed: int = 1) -> np.ndarray:
    return 100.0 + np.random.default_rng(seed).normal(0, NOISE, n)


def test_a_step_is_no_spike_but_a_spike_on_either_side_of_it_is() -> None:
    x = _noisy(120)
    x[60:] += 40.0  # step up at 60
    assert _judge(x) == []
    spiked = x.copy()
    spiked[61] += 25.0  # the reading after the step's first one
    spiked[59] -= 25.0  # the reading before the step, away from both levels
    assert _judge(spiked) == [59.0, 61.0]
    # A spike riding the step's first reading in the step's direction: the next reading comes
    # back less than half way (25 of 65), as after a plant overshoot; taken for the step.
    overshoot = x.copy()
    overshoot[60] += 25.0
    assert _judge(overshoot) == []


def test_a_spike_on_a_ramp_is_found_and_the_ramp_is_not() -> None:
    x = _noisy(120) + np.where(np.arange(120) >= 50, 8.0 * (np.arange(120) - 50), 0.0)
    assert _judge(x) == []
    x[80] -= 20.0  # on the ramp, where the median of the past lags by 4 steps
    assert _judge(x) == [80.0]


def test_a_dip_that_recovers_slowly_is_not_a_spike() -> None:
    x = _noisy(120)
    x[60:66] -= np.array([40.0, 30.0, 20.0, 12.0, 6.0, 2.0])  # a plant dip: drops, recovers
    assert _judge(x) == []
    # A steeper recovery: the dip's second reading sits below the median and its next reading,
    # but above the reading before it: no spike either.
    x = _noisy(120)
    x[60:64] -= np.array([30.0, 24.0, 10.0, 4.0])
    assert _judge(x) == []


def test_a_relative_floor_lets_a_low_reading_be_judged_on_its_own_noise() -> None:
    # Relative noise (1 %) at a reading of 1: an absolute floor fit for a reading of 100
    # hides a 20-sigma spike at 1; a relative floor of 1 % finds it and nothing else.
    x = 1.0 + np.random.default_rng(4).normal(0, 0.01, 120)
    x[70] += 0.2
    assert _judge(x, s_floor=1.0) == []
    assert _judge(x, s_floor=0.0, s_floor_rel=0.01) == [70.0]


def test_a_belt_starting_from_standstill_is_judged_on_the_noise_of_its_new_level() -> None:
    # Zeros fill both windows (no noise, median 0); the first readings after the start carry
    # 3 % noise at 1.5 t/h. Judged on the zeros they would all stand out; at their own level,
    # with a relative floor of 3 %, none does, while a real spike just after the start does.
    rng = np.random.default_rng(7)
    x = np.concatenate((np.zeros(60), 1.5 * (1.0 + rng.normal(0, 0.03, 60))))
    assert _judge(x, s_floor=0.001, s_floor_rel=0.03) == []
    x[63] += 1.0  # about 22 sigma at 1.5 t/h
    assert _judge(x, s_floor=0.001, s_floor_rel=0.03) == [63.0]


def test_the_verdict_waits_for_the_next_reading_and_a_gap_cancels_it() -> None:
    params = ChainParams.from_tags([TagConditioning(window=7, n_sigma=4.0, s_floor=2.0)])
    x = _noisy(WARM + 10)
    k0 = np.zeros(1, np.int64)
    ok = np.zeros(1, np.uint8)
    for gap_next in (False, True):
        conf = SpikeConfirmation(params)
        conf.update(
            np.zeros(len(x), np.int64), np.arange(len(x), dtype=np.float64), x, np.zeros(len(x), np.uint8)
        )
        t_spike = float(len(x))
        _, ts = conf.update(k0, np.array([t_spike]), np.array([x[-1] + 30.0]), ok)
        assert ts.tolist() == []  # no verdict before the next reading
        next_flags = np.array([GAP if gap_next else 0], np.uint8)
        _, ts = conf.update(k0, np.array([t_spike + 500.0]), np.array([x[-1]]), next_flags)
        assert ts.tolist() == ([] if gap_next else [t_spike])


def test_nothing_is_judged_until_the_windows_are_full() -> None:
    x = _noisy(WARM + 5)
    x[WARM - 2] += 30.0
    x[WARM + 2] += 30.0
    assert _judge(x) == [float(WARM + 2)]


def test_tags_without_a_window_and_unused_samples_are_not_judged() -> None:
    params = ChainParams.from_tags([TagConditioning(), TagConditioning(window=7, n_sigma=4.0, s_floor=2.0)])
    n = 2 * (WARM + 20)
    tag = np.tile(np.array([0, 1]), n // 2)
    x = np.repeat(_noisy(n // 2), 2)
    x[2 * (WARM + 5)] += 30.0  # tag 0: no window
    x[2 * (WARM + 10) + 1] += 30.0  # tag 1: the spike
    flags = np.zeros(n, np.uint8)
    # An unusable reading of tag 1 between the spike and its next reading does not count.
    flags[2 * (WARM + 11) + 1] = UNUSABLE
    x[2 * (WARM + 11) + 1] = np.nan
    got = _confirm_in_chunks(params, (tag, np.arange(float(n)), x, flags), 4)
    assert got == {(1, float(2 * (WARM + 10) + 1))}
