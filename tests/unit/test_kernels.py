"""The numba kernels equal their numpy references on arbitrary sample streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import kernels
from gateway.kernels_reference import (
    StreamGrid,
    condition_reference,
    stream_grid_reference,
    window_yield_reference,
)

BIN_S = 10.0
MAX_GAP_S = 45.0


@st.composite
def tagged_samples(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(1, 200))
    tag = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int32)
    # Mostly increasing times with occasional steps back, as from reordered deliveries.
    steps = draw(st.lists(st.floats(-20, 60, allow_nan=False), min_size=n, max_size=n))
    t = 1_000.0 + np.cumsum(steps)
    value = np.array(
        draw(
            st.lists(
                st.one_of(st.floats(-5, 105, allow_nan=False), st.just(np.nan), st.just(np.inf)),
                min_size=n,
                max_size=n,
            )
        )
    )
    quality = np.array(draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), min_size=n, max_size=n)), np.int8)
    return tag, t, value, quality


@given(tagged_samples(), st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_condition_batch_equals_reference_in_any_chunking(
    samples: tuple[np.ndarray, ...], chunks: int
) -> None:
    tag, t, value, quality = samples
    lo = np.zeros(4)
    hi = np.full(4, 100.0)
    last_t = np.full(4, -np.inf)
    last_v = np.full(4, np.nan)
    last_q = np.full(4, 3, np.int8)
    counters = np.zeros((4, 3), np.int64)
    # State carried across calls must give the same answer as one call over everything.
    parts = [
        kernels.condition_batch(tag[s], t[s], value[s], quality[s], lo, hi, last_t, last_v, last_q, counters)
        for s in np.array_split(np.arange(len(tag)), chunks)
    ]
    got = np.concatenate(parts)
    want = condition_reference(tag, t, value, quality, lo, hi, np.full(4, -np.inf))
    np.testing.assert_array_equal(got, want)
    assert counters[:, 0].sum() == len(tag)
    assert counters[:, 2].sum() == np.count_nonzero(want == kernels.DROPPED_OUT_OF_ORDER)


@st.composite
def stream_history(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(1, 300))
    steps = draw(st.lists(st.floats(-5, 80, allow_nan=False), min_size=n, max_size=n))
    t = 5_000.0 + np.cumsum(steps)
    incr = np.array(draw(st.lists(st.floats(0, 0.05, allow_nan=False), min_size=n, max_size=n)))
    total = np.cumsum(incr)
    # Occasional totalizer resets to zero.
    resets = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & (
        np.array(draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))) == 0
    )
    total = np.where(resets, 0.0, total)
    quality = np.array(draw(st.lists(st.sampled_from([0, 0, 0, 0, 1, 2]), min_size=n, max_size=n)), np.int8)
    return t, total, quality


def _run_stream(
    t: np.ndarray,
    v: np.ndarray,
    q: np.ndarray,
    kind: int,
    chunks: int,
    ring: int,
    modulus_t: float = 0.0,
    max_rate_tph: float = np.inf,
) -> tuple:
    st_last_t = np.full(1, np.nan)
    st_last_raw = np.zeros(1)
    st_last_q = np.zeros(1, np.int8)
    st_cum = np.zeros(1)
    st_events = np.zeros((1, 3), np.int64)
    ring_cum = np.zeros((1, ring))
    ring_good = np.zeros((1, ring), np.bool_)
    ring_head = np.full(1, -1, np.int64)
    ring_first = np.zeros(1, np.int64)
    tag_stream = np.zeros(1, np.int64)
    tag_kind = np.full(1, kind, np.int64)
    scale = np.full(1, 1000.0)
    modulus = np.full(1, modulus_t)
    max_rate = np.full(1, max_rate_tph)
    for s in np.array_split(np.arange(len(t)), chunks):
        kernels.accumulate_streams(
            np.zeros(len(s), np.int32), t[s], v[s], q[s], tag_stream, tag_kind, scale, modulus, max_rate,
            BIN_S, MAX_GAP_S, st_last_t, st_last_raw, st_last_q, st_cum, st_events, ring_cum, ring_good,
            ring_head, ring_first,
        )  # fmt: skip
    return ring_cum, ring_good, ring_head, ring_first


@given(stream_history(), st.sampled_from([kernels.KIND_TOTAL, kernels.KIND_RATE]), st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_accumulate_streams_equals_reference(history: tuple[np.ndarray, ...], kind: int, chunks: int) -> None:
    t, v, q = history
    ring = 4096  # longer than any drawn history: the whole grid stays in the ring
    ring_cum, ring_good, ring_head, ring_first = _run_stream(t, v, q, kind, chunks, ring)
    ref = stream_grid_reference(t, v, q, kind, 1000.0, BIN_S, MAX_GAP_S)
    if len(ref.cum) == 0:
        assert ring_head[0] < ring_first[0]
        return
    assert ring_first[0] == ref.first
    assert ring_head[0] == ref.head
    idx = np.arange(ref.first, ref.head + 1) % ring
    np.testing.assert_allclose(ring_cum[0, idx], ref.cum, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(ring_good[0, idx], ref.good)


@given(
    stream_history(),
    st.sampled_from([0.0, 0.5, 2.0]),
    st.sampled_from([np.inf, 3.0, 30.0]),
    st.integers(1, 5),
)
@settings(max_examples=200, deadline=None)
def test_totalizer_rollover_reset_and_implausible_jumps_equal_reference(
    history: tuple[np.ndarray, ...], modulus_t: float, max_rate_tph: float, chunks: int
) -> None:
    t, v, q = history
    # Wrap the totals at the modulus (in tag units: the scale is 1000, tonnes = kg x 1000 here).
    if modulus_t > 0:
        v = np.mod(v, modulus_t / 1000.0)
    ring = 4096
    ring_cum, ring_good, ring_head, ring_first = _run_stream(
        t, v, q, kernels.KIND_TOTAL, chunks, ring, modulus_t, max_rate_tph
    )
    ref = stream_grid_reference(
        t, v, q, kernels.KIND_TOTAL, 1000.0, BIN_S, MAX_GAP_S, modulus_t, max_rate_tph
    )
    if len(ref.cum) == 0:
        assert ring_head[0] < ring_first[0]
        return
    idx = np.arange(ref.first, ref.head + 1) % ring
    np.testing.assert_allclose(ring_cum[0, idx], ref.cum, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(ring_good[0, idx], ref.good)


def test_a_rollover_with_its_modulus_configured_loses_no_mass() -> None:
    t = 10_000.0 + np.arange(0, 600, 2.0)
    total = (np.arange(len(t)) * 0.001) % 0.1  # kg-scale counter wrapping at 0.1 (= 100 t here)
    exact = np.arange(len(t))[-1] * 0.001 * 1000.0
    ring_cum, ring_good, ring_head, ring_first = _run_stream(
        t, total, np.zeros(len(t), np.int8), kernels.KIND_TOTAL, 3, 4096, 100.0
    )
    # The last boundary's cumulative mass is the true mass to it, wraps included.
    head_t = ring_head[0] * BIN_S
    assert ring_cum[0, ring_head[0] % 4096] == pytest.approx(
        exact * (head_t - t[0]) / (t[-1] - t[0]), rel=1e-9
    )
    assert ring_good[0, np.arange(ring_first[0] + 1, ring_head[0] + 1) % 4096].all()  # wraps are not gaps


def test_a_glitch_to_zero_and_back_is_not_counted_as_mass() -> None:
    t = 10_000.0 + np.arange(0, 200, 2.0)
    total = 50.0 + np.arange(len(t)) * 0.0001  # 50 t on the counter, 0.18 t/h (in tag units x1000)
    total[40] = 0.0  # one glitched reading
    no_cap = _run_stream(t, total, np.zeros(len(t), np.int8), kernels.KIND_TOTAL, 1, 4096)
    capped = _run_stream(t, total, np.zeros(len(t), np.int8), kernels.KIND_TOTAL, 1, 4096, 0.0, 5000.0)
    head = int(no_cap[2][0])
    true_to_head = 0.1 / 2.0 * (head * BIN_S - t[0])  # 0.1 per 2 s sample, in scaled units
    # Without a plausible rate the jump back from the glitch counts the whole counter (50 x 1000).
    assert no_cap[0][0, head % 4096] > 40_000
    # With one, the jump is refused: only the two intervals beside the glitch are lost.
    assert capped[0][0, head % 4096] == pytest.approx(true_to_head - 2 * 0.1, abs=1e-9)


@given(stream_history(), stream_history(), st.integers(1, 60), st.integers(0, 40))
@settings(max_examples=150, deadline=None)
def test_window_yield_equals_reference(
    feed: tuple[np.ndarray, ...], bm: tuple[np.ndarray, ...], window_bins: int, delay_bins: int
) -> None:
    ring = 4096
    grids: list[StreamGrid] = []
    rings = []
    for t, v, q in (feed, bm):
        rings.append(_run_stream(t, v, q, kernels.KIND_TOTAL, 1, ring))
        grids.append(stream_grid_reference(t, v, q, kernels.KIND_TOTAL, 1000.0, BIN_S, MAX_GAP_S))
    ring_cum = np.vstack([r[0] for r in rings])
    ring_good = np.vstack([r[1] for r in rings])
    ring_head = np.concatenate([r[2] for r in rings])
    ring_first = np.concatenate([r[3] for r in rings])
    got = kernels.window_yield(ring_cum, ring_good, ring_head, ring_first, 0, 1, window_bins, delay_bins)
    want = window_yield_reference(grids[0], grids[1], window_bins, delay_bins)
    if want[1] == 0:
        assert got[1] == 0
        return
    np.testing.assert_allclose(got, np.array(want, float), rtol=1e-12, atol=1e-9)


def test_totalizer_gap_loses_no_mass() -> None:
    # 1 t/h for an hour with a 20-minute silence in the middle: the mass is all there,
    # and the silent stretch is flagged not good.
    t = np.r_[np.arange(0, 1200, 5.0), np.arange(2400, 3605, 5.0)]
    v = t / 3600.0
    ring_cum, ring_good, ring_head, ring_first = _run_stream(
        t, v, np.zeros(len(t), np.int8), kernels.KIND_TOTAL, 3, 1024
    )
    idx = np.arange(ring_first[0], ring_head[0] + 1) % 1024
    total_kg = ring_cum[0, idx[-1]] - ring_cum[0, idx[0]]
    span_h = (ring_head[0] - ring_first[0]) * BIN_S / 3600
    assert abs(total_kg - 1000.0 * span_h) < 1e-6
    bad = np.count_nonzero(~ring_good[0, idx])
    # The silent interval (1195 s, 2400 s] holds the 121 grid boundaries 1200, 1210, ..., 2400.
    assert bad == 121
