"""Lone Hampel flags are spikes, runs of them are steps: the kernel equals its reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.conditioning import OUT_OF_ORDER, SPIKE, UNUSABLE
from gateway.spike_confirmation import SpikeConfirmation, confirm_spikes_reference


@st.composite
def flagged_history(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 300))
    tag = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    t = np.arange(n, dtype=np.float64)  # distinct times, in order
    flags = np.array(
        draw(
            st.lists(
                st.sampled_from([0, 0, 0, SPIKE, SPIKE, UNUSABLE, OUT_OF_ORDER, 2]), min_size=n, max_size=n
            )
        ),
        np.uint8,
    )
    return tag, t, flags


@given(flagged_history(), st.integers(1, 6))
@settings(max_examples=300, deadline=None)
def test_confirmation_equals_reference_in_any_chunking(history: tuple[np.ndarray, ...], chunks: int) -> None:
    tag, t, flags = history
    conf = SpikeConfirmation(4)
    got: set[tuple[int, float]] = set()
    for s in np.array_split(np.arange(len(tag)), chunks):
        k, ts = conf.update(tag[s], t[s], flags[s])
        got |= {(int(a), float(b)) for a, b in zip(k, ts, strict=True)}
    assert got == confirm_spikes_reference(tag, t, flags)
    assert conf.confirmed.sum() == len(got)


def test_a_step_is_not_a_spike_and_a_lone_flag_is() -> None:
    conf = SpikeConfirmation(1)
    tag = np.zeros(9, np.int64)
    # A lone flag at t=2; a step flags t=5, 6, 7 (the median catching up).
    flags = np.array([0, 0, SPIKE, 0, 0, SPIKE, SPIKE, SPIKE, 0], np.uint8)
    _, ts = conf.update(tag, np.arange(9.0), flags)
    assert ts.tolist() == [2.0]
    # The verdict on a flagged last sample waits for the next tick.
    _, ts = conf.update(tag[:1], np.array([9.0]), np.array([SPIKE], np.uint8))
    assert ts.tolist() == []
    _, ts = conf.update(tag[:1], np.array([10.0]), np.array([0], np.uint8))
    assert ts.tolist() == [9.0]
