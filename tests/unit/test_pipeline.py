"""The pipeline's yield: right value, delay-aligned, and never GOOD on stale, bad or thin data.

Also what a tick hands the outputs: the latest state of exactly the tags that took a sample, as
columns that later ticks leave alone, and a warm-up that leaves nothing to compile on live data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import typeof
from numba.core.dispatcher import Dispatcher

from gateway import kernels, pipeline, ports
from gateway.config import LineConfig, load_config
from gateway.kernels_reference import condition_reference
from gateway.pipeline import YieldPipeline
from gateway.ports import SignalState, YieldFigure
from gateway.samples import Quality, SampleBatch

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_767_600_000.0
FEED_TPH = 1.7
YIELD = 0.45


@pytest.fixture(scope="module")
def config() -> LineConfig:
    return load_config(CONFIG)


def _feed(
    p: YieldPipeline, hours: float, step_s: float = 5.0, start_s: float = 0.0, bm_quality: int = 0
) -> None:
    """Feed steady totals: BM = YIELD x feed, delayed by the configured transport delay."""
    delay = p.config.yield_.transport_delay_min * 60
    ts = np.arange(start_s, start_s + hours * 3600, step_s)
    feed = FEED_TPH * ts / 3600
    bm = YIELD * FEED_TPH * np.clip(ts - delay, 0, None) / 3600
    for s in np.array_split(np.arange(len(ts)), max(1, len(ts) // 50)):
        n = len(s)
        p.tick(
            SampleBatch(
                tag=np.r_[np.full(n, p.feed_tag), np.full(n, p.bm_tag)].astype(np.int32),
                t=np.r_[T0 + ts[s], T0 + ts[s]],
                value=np.r_[feed[s], bm[s]],
                quality=np.r_[np.zeros(n), np.full(n, bm_quality)].astype(np.int8),
                status=np.zeros(2 * n, np.uint32),
            )
        )


def _last_yield(p: YieldPipeline) -> YieldFigure | None:
    return p.tick(SampleBatch.empty()).yield_rolling


def test_full_window_gives_true_yield_good(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _feed(p, hours=7)
    y = _last_yield(p)
    assert y is not None
    assert y.value is not None
    assert y.value == pytest.approx(YIELD, abs=1e-9)
    assert y.quality is Quality.GOOD
    assert y.covered_h == pytest.approx(4.0)
    sigmas = (config.stream_tag("feed").sigma_rel, config.stream_tag("black_mass").sigma_rel)
    assert y.uncertainty == pytest.approx(2 * YIELD * np.hypot(*sigmas))
    assert y.basis == "wet"


def test_filling_window_is_uncertain(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _feed(p, hours=3)
    y = _last_yield(p)
    assert y is not None
    assert y.value is not None
    assert y.covered_h < y.window_h
    assert y.quality is Quality.UNCERTAIN


def test_stale_input_makes_yield_uncertain(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _feed(p, hours=7)
    t = float(p.last_t[p.feed_tag])
    p.tick(
        SampleBatch(
            tag=np.array([p.feed_tag], np.int32),
            t=np.array([t]),
            value=np.array([np.nan]),
            quality=np.array([Quality.STALE], np.int8),
            status=np.zeros(1, np.uint32),
        )
    )
    update = p.tick(SampleBatch.empty())
    y = update.yield_rolling
    assert y is not None
    assert y.quality is Quality.UNCERTAIN
    # Nor is the running shift figure GOOD while an input it depends on is stale.
    assert update.yield_shift is not None
    assert update.yield_shift.quality is not Quality.GOOD
    feed_signal = next(s for s in p.signal_states() if s.name == "bw_feed.total")
    assert feed_signal.quality is Quality.STALE
    assert np.isnan(feed_signal.value)


def test_uncertain_black_mass_samples_never_give_good_yield(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _feed(p, hours=7, bm_quality=int(Quality.UNCERTAIN))
    y = _last_yield(p)
    assert y is not None
    assert y.quality is Quality.UNCERTAIN
    assert y.coverage == 0.0


def test_out_of_range_value_is_flagged_bad(config: LineConfig) -> None:
    p = YieldPipeline(config)
    k = config.tag_index("shr.power")
    update = p.tick(
        SampleBatch(
            tag=np.array([k, k], np.int32),
            t=np.array([T0, T0 + 1]),
            value=np.array([100.0, 900.0]),
            quality=np.zeros(2, np.int8),
            status=np.zeros(2, np.uint32),
        )
    )
    assert list(update.samples.quality) == [Quality.GOOD, Quality.BAD]
    assert update.signals[0].quality is Quality.BAD


def test_alarm_conditions_name_stale_and_bad_tags_and_untrustworthy_yield(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _feed(p, hours=7)
    assert p.alarm_conditions(_last_yield(p)) == {}
    t = float(p.last_t[p.feed_tag])
    k = config.tag_index("shr.power")
    p.tick(
        SampleBatch(
            tag=np.array([p.feed_tag, k], np.int32),
            t=np.array([t, t]),
            value=np.array([np.nan, 900.0]),
            quality=np.array([Quality.STALE, Quality.GOOD], np.int8),
            status=np.zeros(2, np.uint32),
        )
    )
    conditions = p.alarm_conditions(_last_yield(p))
    assert set(conditions) == {
        "tag_stale:bw_feed.total",
        "tag_bad:shr.power",
        "yield_uncertain:yield_rolling",
    }
    # Tags that never reported are not stale: they have not started.
    assert not any("gas.h2" in c for c in conditions)


def _batch(
    tag: Sequence[int], t: Sequence[float], value: Sequence[float], quality: Sequence[int]
) -> SampleBatch:
    return SampleBatch(
        tag=np.asarray(tag, np.int32),
        t=np.asarray(t, np.float64),
        value=np.asarray(value, np.float64),
        quality=np.asarray(quality, np.int8),
        status=np.zeros(len(tag), np.uint32),
    )


# Both balance totals among them, so the streams run as well.
TAGS_UNDER_TEST = ("bw_feed.total", "bw_feed.rate", "shr.power", "bm.total", "gas.h2")


@st.composite
def ticks_of_samples(draw: st.DrawFn, tags: Sequence[int]) -> list[SampleBatch]:
    """A few ticks of samples: repeated tags, some steps back in time, bad and odd values."""
    n = draw(st.integers(1, 120))
    tag = draw(st.lists(st.sampled_from(tags), min_size=n, max_size=n))
    steps = draw(st.lists(st.floats(-30, 60, allow_nan=False), min_size=n, max_size=n))
    value = draw(
        st.lists(
            st.one_of(st.floats(-1, 3, allow_nan=False), st.just(np.nan), st.just(np.inf)),
            min_size=n,
            max_size=n,
        )
    )
    quality = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), min_size=n, max_size=n))
    t = T0 + np.cumsum(steps)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    return [_batch(tag[a:b], t[a:b], value[a:b], quality[a:b]) for a, b in pairwise(bounds)]


def _expected_signals(
    config: LineConfig, tag: np.ndarray, t: np.ndarray, v: np.ndarray, q: np.ndarray
) -> list[str]:
    """The newest kept sample of each tag, as SignalState reprs (repr shows NaN and the types)."""
    order = np.unique(tag[::-1], return_index=True)[1]
    last = len(tag) - 1 - order  # index of each tag's last sample, tags ascending
    return [
        repr(
            SignalState(
                config.tags[k].name, config.tags[k].unit, float(t[i]), float(v[i]), Quality(int(q[i]))
            )
        )
        for k, i in zip(tag[last].tolist(), last.tolist(), strict=True)
    ]


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_each_tick_hands_over_the_newest_kept_sample_of_every_tag_it_touched(
    config: LineConfig, data: st.DataObject
) -> None:
    ticks = data.draw(ticks_of_samples([config.tag_index(name) for name in TAGS_UNDER_TEST]))
    p = YieldPipeline(config)
    everything = [np.concatenate([getattr(b, c) for b in ticks]) for c in ("tag", "t", "value", "quality")]
    lo = np.array([tag.range[0] for tag in config.tags], np.float64)
    hi = np.array([tag.range[1] for tag in config.tags], np.float64)
    cq_all = condition_reference(*everything, lo, hi, np.full(len(config.tags), -np.inf))
    start = 0
    for batch in ticks:
        update = p.tick(batch)
        cq = cq_all[start : start + len(batch)]
        start += len(batch)
        kept = cq != kernels.DROPPED_OUT_OF_ORDER
        np.testing.assert_array_equal(update.samples.tag, batch.tag[kept])
        np.testing.assert_array_equal(update.samples.t, batch.t[kept])
        np.testing.assert_array_equal(update.samples.value, batch.value[kept])
        np.testing.assert_array_equal(update.samples.quality, cq[kept])
        want = _expected_signals(config, batch.tag[kept], batch.t[kept], batch.value[kept], cq[kept])
        assert [repr(s) for s in update.signals] == want  # iterating
        assert [repr(update.signals[i]) for i in range(len(update.signals))] == want  # indexing
        rows = update.signal_rows()
        assert [repr(SignalState(n, u, t, v, Quality(q))) for n, u, t, v, q in rows] == want
        assert all(type(t) is float and type(v) is float and type(q) is int for _, _, t, v, q in rows)


def test_a_tag_whose_samples_were_all_dropped_did_not_change(config: LineConfig) -> None:
    p = YieldPipeline(config)
    h2, power = config.tag_index("gas.h2"), config.tag_index("shr.power")
    first = p.tick(_batch([h2, power], [T0 + 10, T0 + 10], [5.0, 100.0], [0, 0]))
    second = p.tick(_batch([h2, power, power], [T0 + 5, T0 + 20, T0 + 15], [7.0, 200.0, 150.0], [0, 0, 0]))
    assert [(s.name, s.value) for s in second.signals] == [("shr.power", 200.0)]
    assert list(second.samples.tag) == [power]
    # The first tick's update still shows what was current then: a snapshot, not a view.
    assert sorted((s.name, s.value) for s in first.signals) == [("gas.h2", 5.0), ("shr.power", 100.0)]
    assert len(p.tick(SampleBatch.empty()).signals) == 0


def test_a_stale_mark_reaches_the_update_as_a_stale_signal(config: LineConfig) -> None:
    p = YieldPipeline(config)
    h2 = config.tag_index("gas.h2")
    p.tick(_batch([h2], [T0], [5.0], [0]))
    # What the runtime puts into the bus when a source goes away or falls silent.
    update = p.tick(_batch([h2], [T0], [np.nan], [Quality.STALE]))
    ((name, unit, t, value, quality),) = update.signal_rows()
    assert (name, unit, t, quality) == ("gas.h2", "ppm", T0, Quality.STALE)
    assert np.isnan(value)
    assert update.signals[0].quality is Quality.STALE


def test_a_tick_builds_no_signal_objects(config: LineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> SignalState:
        raise AssertionError("a tick built a SignalState")

    monkeypatch.setattr(ports, "SignalState", refuse)
    monkeypatch.setattr(pipeline, "SignalState", refuse)
    p = YieldPipeline(config)
    tags = np.repeat(np.arange(len(config.tags)), 10)
    update = p.tick(_batch(tags, T0 + np.arange(len(tags)), np.zeros(len(tags)), np.zeros(len(tags))))
    assert len(update.signals) == len(config.tags)
    assert update.signal_rows()[0][0] == config.tags[0].name  # rows need no objects either


def test_warm_up_runs_every_kernel_with_the_argument_types_of_live_ticks(
    config: LineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: set[tuple[str, tuple[str, ...]]] = set()

    def spy(name: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.add((name, tuple(str(typeof(a)) for a in args)))
            return kernel(*args)

        return call

    public = {n: f for n, f in vars(kernels).items() if isinstance(f, Dispatcher) and not n.startswith("_")}
    for name, kernel in public.items():
        monkeypatch.setattr(kernels, name, spy(name, kernel))
    YieldPipeline(config).warm_up()
    warmed = set(calls)
    calls.clear()
    p = YieldPipeline(config)
    _feed(p, hours=3)
    assert _last_yield(p) is not None
    assert {name for name, _ in warmed} == set(public)
    assert calls <= warmed  # nothing left to compile when live data arrives


def test_shift_yield_is_final_once_per_shift_and_good_when_covered(config: LineConfig) -> None:
    p = YieldPipeline(config)
    # A shift that starts well after T0, so the lead-in of feed (delay + 10 min) has totals >= 0.
    shift = p.shift.calendar.shift_at(T0 + 7 * 3600)
    # From the start of a shift through the next shift's end plus the delay, as one stream.
    start = shift.start - T0
    hours = (shift.end - shift.start) * 2 / 3600 + config.yield_.transport_delay_min / 60 + 0.5
    finals = []
    original_tick = p.tick

    def tick_and_keep(batch: SampleBatch):  # type: ignore[no-untyped-def]
        update = original_tick(batch)
        finals.extend(update.shifts_completed)
        return update

    p.tick = tick_and_keep  # type: ignore[method-assign]
    _feed(p, hours, start_s=start - config.yield_.transport_delay_min * 60 - 600)
    before = p.shift.calendar.shift_at(shift.start - 1)
    assert [f.label for f in finals] == [
        before.label,
        shift.label,
        p.shift.calendar.shift_at(shift.end).label,
    ], "one final figure per ended shift, in order"
    # The gateway started during the shift before: it cannot give that shift's figure.
    assert (finals[0].value, finals[0].quality) == (None, Quality.BAD)
    for f in finals[1:]:
        assert (f.horizon, f.final, f.quality) == ("shift", True, Quality.GOOD)
        assert f.value == pytest.approx(YIELD, abs=1e-9)
        assert f.window_h == pytest.approx(8.0)
        assert f.coverage >= 0.99
    running = p.tick(SampleBatch.empty()).yield_shift
    assert running is not None
    assert running.final is False
    assert running.covered_h < running.window_h


def test_shift_figure_with_a_long_gap_is_not_good(config: LineConfig) -> None:
    p = YieldPipeline(config)
    # A shift that starts well after T0, so the lead-in of feed (delay + 10 min) has totals >= 0.
    shift = p.shift.calendar.shift_at(T0 + 7 * 3600)
    lead = config.yield_.transport_delay_min * 60 + 600
    finals = []
    original_tick = p.tick

    def tick_and_keep(batch: SampleBatch):  # type: ignore[no-untyped-def]
        update = original_tick(batch)
        finals.extend(update.shifts_completed)
        return update

    p.tick = tick_and_keep  # type: ignore[method-assign]
    start = shift.start - T0 - lead
    _feed(p, (lead + 2 * 3600) / 3600, start_s=start)
    # Two silent hours of both streams, then the rest of the shift and the delay.
    resume = start + lead + 4 * 3600
    _feed(p, (shift.end - T0 - resume) / 3600 + config.yield_.transport_delay_min / 60 + 0.2, start_s=resume)
    assert [f.label for f in finals][1:] == [shift.label]
    assert finals[1].quality is Quality.UNCERTAIN
    assert finals[1].coverage < config.yield_.min_coverage
