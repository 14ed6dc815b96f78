"""The conditioning chain equals its numpy reference in any chunking, and behaves as specified."""

from __future__ import annotations

import itertools
import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import conditioning as cond
from gateway.conditioning import ChainOutput, ChainParams, ChainState, TagConditioning
from gateway.conditioning_reference import chain_reference, delay_reference

T0 = 1_000.0
INF = math.inf


@st.composite
def tag_conditioning(draw: st.DrawFn) -> TagConditioning:
    channel = draw(st.sampled_from([cond.CHANNEL_SIGNAL, cond.CHANNEL_RATE, cond.CHANNEL_TOTALIZER]))
    clamp_lo, clamp_hi = draw(st.sampled_from([(-INF, INF), (0.0, 100.0), (40.0, 60.0)]))
    return TagConditioning(
        channel=channel,
        window=draw(st.sampled_from([0, 1, 3, 5, 7])),
        n_sigma=draw(st.sampled_from([2.0, 3.0])),
        s_floor=draw(st.sampled_from([0.0, 0.05, 0.5])),
        s_floor_rel=draw(st.sampled_from([0.0, 0.0, 0.01, 0.1])),
        clamp_lo=clamp_lo,
        clamp_hi=clamp_hi,
        tau_s=draw(st.sampled_from([0.0, 0.5, 5.0, 60.0])),
        max_gap_s=draw(st.sampled_from([5.0, 45.0, INF])),
        modulus=draw(st.sampled_from([0.0, 10.0, 1000.0])),
        max_rate=draw(st.sampled_from([INF, 3_600.0, 36_000.0])),
        quantum=draw(st.sampled_from([0.0, 0.01])),
    )


@st.composite
def multi_tag_streams(draw: st.DrawFn) -> tuple[list[TagConditioning], tuple[np.ndarray, ...]]:
    """Interleaved samples of 1-4 tags with steps back in time, repeated times, gaps, spikes,
    quantised levels, NaN/inf, BAD/STALE samples and totalizers that roll over, reset and jump."""
    tags = draw(st.lists(tag_conditioning(), min_size=1, max_size=4))
    n = draw(st.integers(0, 250))

    def column(elements: st.SearchStrategy) -> list:
        return draw(st.lists(elements, min_size=n, max_size=n))

    tag = np.array(column(st.integers(0, len(tags) - 1)), np.int32)
    steps = column(st.one_of(st.floats(-10, 50), st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.0])))
    t = T0 + np.cumsum(np.array(steps, np.float64))
    level = np.array(
        column(
            st.one_of(
                st.floats(-10, 110),
                st.integers(0, 40).map(lambda i: 45.0 + 0.25 * i),  # quantised: ties in the window
                st.sampled_from([np.nan, np.inf, -np.inf, 1e4, -1e4]),
            )
        ),
        np.float64,
    )
    quality = np.array(column(st.sampled_from([0, 0, 0, 0, 1, 2, 3])), np.int8)
    increment = column(st.floats(0, 3))
    event = column(st.sampled_from(["", "", "", "", "", "", "reset", "jump"]))
    counter = np.zeros(len(tags))
    value = level.copy()
    for i in range(n):
        k = tag[i]
        p = tags[k]
        if p.channel != cond.CHANNEL_TOTALIZER:
            continue
        counter[k] = {"reset": 0.0, "jump": counter[k] + 1e4}.get(event[i], counter[k]) + increment[i]
        if np.isfinite(level[i]):
            value[i] = counter[k] % p.modulus if p.modulus > 0 else counter[k]
    return tags, (tag, t, value, quality)


def _run_chunked(
    params: ChainParams,
    tag: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    cuts: list[int],
) -> tuple[ChainOutput, ChainState, list[tuple[int, np.ndarray]]]:
    """Run the chain over the batch cut at `cuts`; returns outputs, state and (end, totals) per call."""
    state = ChainState.new(params.n_tags, params.window_capacity)
    out = ChainOutput.new(len(tag))
    totals = []
    for a, b in pairwise([0, *sorted(cuts), len(tag)]):
        part = ChainOutput(out.filtered[a:b], out.despiked[a:b], out.flags[a:b])
        cond.condition(params, state, tag[a:b], t[a:b], value[a:b], quality[a:b], part)
        totals.append((b, state.total.copy()))
    return out, state, totals


@given(multi_tag_streams(), st.lists(st.integers(0, 250), max_size=5))
@settings(max_examples=200, deadline=None)
def test_chain_equals_reference_in_any_chunking(
    streams: tuple[list[TagConditioning], tuple[np.ndarray, ...]], cuts: list[int]
) -> None:
    tags, (tag, t, value, quality) = streams
    params = ChainParams.from_tags(tags)
    cuts = [min(c, len(tag)) for c in cuts]
    out, state, totals = _run_chunked(params, tag, t, value, quality, cuts)

    for k, p in enumerate(tags):
        idx = np.flatnonzero(tag == k)
        ref = chain_reference(t[idx], value[idx], quality[idx], p)
        np.testing.assert_array_equal(out.flags[idx], ref.flags)
        np.testing.assert_array_equal(out.despiked[idx], ref.despiked)
        # exp() may differ in the last bit between numpy and libm; the recursion is the same.
        np.testing.assert_allclose(out.filtered[idx], ref.filtered, rtol=1e-12, atol=1e-12)
        for bit in range(cond.N_COUNTERS):
            assert state.counters[k, bit] == np.count_nonzero(ref.flags & (1 << bit))
        # State carried across calls: after every call the total is the reference's so far.
        for end, total in totals:
            seen = np.count_nonzero(idx < end)
            assert total[k] == (ref.total_after[seen - 1] if seen else 0.0)


@given(multi_tag_streams())
@settings(max_examples=100, deadline=None)
def test_sorted_window_stays_the_sorted_ring(
    streams: tuple[list[TagConditioning], tuple[np.ndarray, ...]],
) -> None:
    tags, (tag, t, value, quality) = streams
    params = ChainParams.from_tags(tags)
    _, state, _ = _run_chunked(params, tag, t, value, quality, [])
    for k, p in enumerate(tags):
        held = state.window_pos[k, cond.W_FILL]
        assert held <= p.window
        np.testing.assert_array_equal(state.window_sorted[k, :held], np.sort(state.window_ring[k, :held]))


def _one_tag(p: TagConditioning, t: np.ndarray, value: np.ndarray, quality: np.ndarray | None = None):
    params = ChainParams.from_tags([p])
    state = ChainState.new(1, params.window_capacity)
    q = np.zeros(len(t), np.int8) if quality is None else quality
    out = cond.condition(params, state, np.zeros(len(t), np.int32), t, value, q)
    return out, state


def test_spike_of_20_sigma_in_noise_is_replaced_and_flagged() -> None:
    rng = np.random.default_rng(3)
    t = T0 + np.arange(200.0)
    x = 50.0 + rng.normal(0.0, 1.0, 200)
    x[120] += 20.0
    p = TagConditioning(channel=cond.CHANNEL_RATE, window=11, n_sigma=3.0, s_floor=0.01)
    out, state = _one_tag(p, t, x)
    assert out.flags[120] & cond.SPIKE
    assert out.despiked[120] == np.median(x[109:120])
    assert abs(out.despiked[120] - 50.0) < 3.0
    assert state.counts(0)["spike"] == np.count_nonzero(out.flags & cond.SPIKE)
    # Noise alone is seldom judged a spike (3 robust sigma, but estimated from 11 samples).
    assert state.counts(0)["spike"] <= 10


def test_rollover_at_modulus_10_loses_no_mass() -> None:
    t = T0 + np.arange(100.0)
    counted = np.cumsum(np.full(100, 0.7))  # 0.7 per second, rolls over every ~14 s
    p = TagConditioning(channel=cond.CHANNEL_TOTALIZER, modulus=10.0, max_rate=0.7 * 3600, quantum=1e-9)
    _, state = _one_tag(p, t, counted % 10.0)
    assert state.total[0] == pytest.approx(counted[-1] - counted[0], rel=1e-12)
    assert state.counts(0)["rollover"] == int(counted[-1] // 10)
    assert state.counts(0)["implausible"] == 0


def test_reset_to_zero_loses_no_mass_beyond_the_interval() -> None:
    t = T0 + np.arange(100.0)
    counted = np.cumsum(np.full(100, 0.5))
    # The counter restarted 0.4 s into the interval ending at sample 60 and counted 0.2 since.
    reading = np.where(np.arange(100) >= 60, counted - counted[60] + 0.2, counted)
    p = TagConditioning(channel=cond.CHANNEL_TOTALIZER, max_rate=0.5 * 3600)
    out, state = _one_tag(p, t, reading)
    assert out.flags[60] == cond.RESET
    assert state.total[0] == pytest.approx(counted[-1] - counted[0] - 0.3, rel=1e-12)


def test_reset_with_implausible_restart_rebases_without_inventing_mass() -> None:
    t = T0 + np.arange(20.0)
    reading = np.r_[np.arange(10.0) + 100.0, np.arange(10.0) + 50.0]  # drops to 50: not a restart
    p = TagConditioning(channel=cond.CHANNEL_TOTALIZER, max_rate=3600.0)
    out, state = _one_tag(p, t, reading)
    assert out.flags[10] == cond.RESET
    assert state.total[0] == pytest.approx(9.0 + 9.0)


def test_implausible_jump_is_not_counted() -> None:
    t = T0 + np.arange(50.0)
    reading = np.cumsum(np.full(50, 0.5))
    reading[30:] += 100.0
    p = TagConditioning(channel=cond.CHANNEL_TOTALIZER, max_rate=0.5 * 3600, quantum=0.001)
    out, state = _one_tag(p, t, reading)
    assert out.flags[30] == cond.IMPLAUSIBLE
    # The jump's whole interval is dropped (never invent mass); counting resumes from the new base.
    assert state.total[0] == pytest.approx(0.5 * 48, rel=1e-12)


def test_quantised_constant_signal_flags_no_spikes_thanks_to_s_floor() -> None:
    rng = np.random.default_rng(5)
    t = T0 + np.arange(300.0)
    # A flat signal on a 0.1 quantisation grid that flickers by one step now and then.
    x = 20.0 + 0.1 * (rng.random(300) < 0.1)
    without_floor = TagConditioning(window=7, n_sigma=3.0, s_floor=0.0)
    out, _ = _one_tag(without_floor, t, x)
    assert np.count_nonzero(out.flags & cond.SPIKE) > 0  # MAD 0: every flicker looks like a spike
    with_floor = TagConditioning(window=7, n_sigma=3.0, s_floor=0.1)
    out, state = _one_tag(with_floor, t, x)
    assert state.counts(0)["spike"] == 0
    np.testing.assert_array_equal(out.despiked, x)


def test_relative_floor_scales_the_hampel_bar_with_the_level() -> None:
    # Readings at 1 and at 100 with the same 0.1 % noise and a +8 % spike at sample 50. With
    # s_floor_rel = 1 % and 4 sigma both spikes are flagged and nothing else; an absolute floor
    # that fits the level of 100 (1.0) misses the spike at 1.
    rng = np.random.default_rng(11)
    t = T0 + np.arange(100.0)
    relative = TagConditioning(window=7, n_sigma=4.0, s_floor=0.0, s_floor_rel=0.01)
    absolute = TagConditioning(window=7, n_sigma=4.0, s_floor=1.0)
    for level in (1.0, 100.0):
        x = level * (1.0 + 0.001 * rng.standard_normal(100))
        x[50] *= 1.08
        out, _ = _one_tag(relative, t, x)
        assert np.flatnonzero(out.flags & cond.SPIKE).tolist() == [50]
        out, _ = _one_tag(absolute, t, x)
        assert np.flatnonzero(out.flags & cond.SPIKE).tolist() == ([50] if level == 100.0 else [])


def test_rate_gap_is_not_integrated_but_a_totalizer_gap_loses_nothing() -> None:
    t = np.r_[np.arange(0.0, 100.0), np.arange(400.0, 500.0)]  # 301 s of silence
    rate = TagConditioning(channel=cond.CHANNEL_RATE, max_gap_s=10.0)
    out, state = _one_tag(rate, t, np.full(len(t), 36.0))  # 36 units/h = 0.01 per second
    assert out.flags[100] == cond.GAP
    assert state.total[0] == pytest.approx(0.01 * (99 + 99))
    totalizer = TagConditioning(channel=cond.CHANNEL_TOTALIZER, max_gap_s=10.0, max_rate=36.0)
    out, state = _one_tag(totalizer, t, t * 0.01)
    assert out.flags[100] == cond.GAP
    assert state.total[0] == pytest.approx(0.01 * (t[-1] - t[0]))


def test_dropped_samples_leave_the_state_alone() -> None:
    p = TagConditioning(channel=cond.CHANNEL_RATE, window=3, tau_s=5.0)
    params = ChainParams.from_tags([p])
    state = ChainState.new(1, 3)
    tag = np.zeros(8, np.int32)
    t = T0 + np.arange(8.0)
    cond.condition(params, state, tag, t, np.arange(8.0), np.zeros(8, np.int8))
    before = [a.copy() for a in (state.scalars, state.window_ring, state.window_sorted, state.window_pos)]
    late = np.array([T0 + 7.0, T0 + 3.0, T0 + 9.0, T0 + 9.0, T0 + np.nan])
    out = cond.condition(
        params,
        state,
        tag[:5],
        late,
        np.array([1.0, 1.0, np.nan, 1.0, 1.0]),
        np.array([0, 1, 0, 2, 0], np.int8),
    )
    np.testing.assert_array_equal(
        out.flags, [cond.OUT_OF_ORDER, cond.OUT_OF_ORDER, cond.UNUSABLE, cond.UNUSABLE, cond.UNUSABLE]
    )
    assert np.isnan(out.filtered).all()
    assert np.isnan(out.despiked).all()
    after = (state.scalars, state.window_ring, state.window_sorted, state.window_pos)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert state.counts(0)["out_of_order"] == 2
    assert state.counts(0)["unusable"] == 3


def test_lowpass_follows_a_step_with_its_time_constant() -> None:
    t = T0 + np.arange(0.0, 31.0, 0.5)
    x = np.r_[0.0, np.ones(len(t) - 1)]
    out, _ = _one_tag(TagConditioning(tau_s=10.0), t, x)
    np.testing.assert_allclose(out.filtered[20], 1.0 - math.exp(-1.0), rtol=1e-12)
    np.testing.assert_allclose(out.filtered[60], 1.0 - math.exp(-3.0), rtol=1e-12)
    unfiltered, _ = _one_tag(TagConditioning(tau_s=0.0), t, x)
    np.testing.assert_array_equal(unfiltered.filtered, x)


def test_lowpass_takes_a_changed_time_constant_at_the_same_sample_interval() -> None:
    params = ChainParams.from_tags([TagConditioning(tau_s=5.0)])
    state = ChainState.new(1, 0)
    tag = np.zeros(5, np.int32)
    q = np.zeros(5, np.int8)
    cond.condition(params, state, tag, T0 + np.arange(5.0), np.zeros(5), q)
    params.set_tag(0, TagConditioning(tau_s=50.0))
    out = cond.condition(params, state, tag[:1], np.array([T0 + 5.0]), np.ones(1), q[:1])
    np.testing.assert_allclose(out.filtered[0], 1.0 - math.exp(-1.0 / 50.0), rtol=1e-12)


def test_gap_restarts_filter_and_hampel_window() -> None:
    t = np.r_[np.arange(0.0, 30.0), np.arange(1000.0, 1030.0)]
    x = np.r_[np.full(30, 10.0), np.full(30, 80.0)]  # the level after the outage is new
    p = TagConditioning(channel=cond.CHANNEL_RATE, window=5, s_floor=0.1, tau_s=20.0, max_gap_s=60.0)
    out, _ = _one_tag(p, t, x)
    assert out.flags[30] == cond.GAP
    assert out.filtered[30] == 80.0
    assert not (out.flags & cond.SPIKE).any()


def test_clamp_replaces_values_outside_the_physical_range() -> None:
    p = TagConditioning(channel=cond.CHANNEL_RATE, clamp_lo=0.0, clamp_hi=150.0)
    out, state = _one_tag(p, T0 + np.arange(3.0), np.array([-5.0, 40.0, 900.0]))
    np.testing.assert_array_equal(out.despiked, [0.0, 40.0, 150.0])
    np.testing.assert_array_equal(out.flags, [cond.CLAMPED, 0, cond.CLAMPED])
    assert state.counts(0)["clamped"] == 2


@pytest.mark.parametrize("window", [2, 23, -1])
def test_invalid_window_is_rejected(window: int) -> None:
    with pytest.raises(ValueError, match="Hampel window"):
        TagConditioning(window=window)


def test_window_beyond_state_capacity_is_rejected() -> None:
    params = ChainParams.from_tags([TagConditioning(window=9)])
    with pytest.raises(ValueError, match="capacity"):
        cond.condition(
            params, ChainState.new(1, 7), np.zeros(1, np.int32), np.ones(1), np.ones(1), np.zeros(1, np.int8)
        )


@st.composite
def delay_pushes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 120))
    stream = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64)
    steps = draw(st.lists(st.sampled_from([0, 1, 1, 1, 2, -1, -3, 7, 30, -20]), min_size=n, max_size=n))
    bins = 100 + np.cumsum(np.array(steps, np.int64))
    value = np.array(draw(st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n)), np.float64)
    return stream, bins, value


@given(
    delay_pushes(),
    st.lists(st.integers(0, 120), max_size=3),
    st.integers(-5, 60),
    # Delays on a 1/64 grid are exact in binary, so the reference's at_bin - delay is exact too.
    st.lists(st.integers(0, 20 * 64).map(lambda i: i / 64), min_size=3, max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_delay_line_equals_reference(
    pushes: tuple[np.ndarray, ...], cuts: list[int], read_back: int, delay: list[float]
) -> None:
    stream, bins, value = pushes
    n_bins = 16
    line = cond.DelayLine.new(3, n_bins)
    for a, b in pairwise([0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]):
        cond.delay_push(stream[a:b], bins[a:b], value[a:b], line.ring, line.head, line.first)
    at_bin = int(bins.max(initial=100)) - read_back
    got = cond.delay_read(line.ring, line.head, line.first, at_bin, np.array(delay))
    for s in range(3):
        mine = stream == s
        want = delay_reference(bins[mine], value[mine], n_bins, at_bin, delay[s])
        np.testing.assert_allclose(got[s], want, rtol=1e-12, atol=1e-9)


def test_delay_read_interpolates_a_fractional_delay() -> None:
    line = cond.DelayLine.new(1, 8)
    bins = np.arange(10, 20, dtype=np.int64)
    cond.delay_push(np.zeros(10, np.int64), bins, bins * 2.0, line.ring, line.head, line.first)
    got = cond.delay_read(line.ring, line.head, line.first, 19, np.array([2.25]))
    assert got[0] == pytest.approx(2.0 * 16.75)
    # Only the newest 8 bins are held: 19 - 8 is gone.
    assert np.isnan(cond.delay_read(line.ring, line.head, line.first, 19, np.array([8.0]))[0])


def test_sorting_network_sorts_every_window_of_seven() -> None:
    # Every input over three levels (ties included): the 0-1 principle needs two, ties need three.
    ring = np.zeros((2, 7))
    srt = np.zeros((2, 7))
    for values in itertools.product((0.0, 1.0, 2.0), repeat=7):
        ring[1] = values
        cond.sort_ring7(ring, srt, 1)
        assert list(srt[1]) == sorted(values)
    assert not srt[0].any()  # only the tag's own row
