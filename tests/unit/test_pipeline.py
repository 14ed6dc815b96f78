"""The pipeline's yield: right value, delay-aligned, and never GOOD on stale, bad or thin data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.config import LineConfig, load_config
from gateway.pipeline import YieldPipeline
from gateway.ports import YieldFigure
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
    assert y.uncertainty == pytest.approx(2 * YIELD * np.hypot(0.01, 0.01))
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
    y = _last_yield(p)
    assert y is not None
    assert y.quality is Quality.UNCERTAIN
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
