"""The feed belt weigher paired with the airlock scale, batch by batch, and the yield reconciled to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.config import LineConfig, load_config
from gateway.pipeline import YieldPipeline
from gateway.samples import Quality, SampleBatch
from gateway.weigher_reference import WeigherReference

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_767_600_000.0
BELT, REF = 0, 1


def airlock(
    hours: float,
    span: float,
    seed: int = 1,
    continuous: tuple[float, float] | None = None,
    step_s: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample times, belt totalizer (t) and scale totalizer (kg) of batches of 30-90 kg weighed
    every 60-180 s and belted evenly over their cycle; the belt reads `span` x true. Between the
    hours in `continuous`, feed runs unweighed at 1.7 t/h (a continuous-feed lot)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * 3600, step_s)
    belt_rate = np.zeros(len(t))  # true kg/s on the belt
    scale = np.zeros(len(t))
    start, weighed = 0.0, 0.0
    while start < t[-1]:
        cycle = rng.uniform(60, 180)
        if continuous is not None and continuous[0] * 3600 <= start < continuous[1] * 3600:
            belt_rate[(t >= start) & (t < start + cycle)] += 1700 / 3600
        else:
            mass = rng.uniform(30, 90)
            weighed += mass
            scale[t >= start] = weighed
            belt_rate[(t >= start) & (t < start + cycle)] += mass / cycle
        start += cycle
    belt_t = np.concatenate(([0.0], np.cumsum(belt_rate[:-1] * step_s))) * span / 1000.0
    return t, belt_t, scale


def observe_all(
    ref: WeigherReference, t: np.ndarray, belt: np.ndarray, scale: np.ndarray, chunk: int = 37
) -> list:
    pairs = []
    for s in range(0, len(t), chunk):
        sl = slice(s, s + chunk)
        n = len(t[sl])
        tag = np.r_[np.full(n, BELT), np.full(n, REF)]
        pairs += ref.observe(tag, np.r_[t[sl], t[sl]], np.r_[belt[sl], scale[sl]], np.zeros(2 * n, np.int8))
    return pairs


@pytest.mark.parametrize("span", [1.0, 1.02, 0.97])
def test_each_batch_pair_reads_the_belts_span(span: float) -> None:
    t, belt, scale = airlock(3, span)
    ref = WeigherReference(BELT, REF, 1.0, 1e-3)
    pairs = observe_all(ref, t, belt, scale)
    assert len(pairs) > 50
    ratio = np.array([p.belt_t / p.ref_t for p in pairs])
    # Exact but for the belt sampled every 2 s at the boundary (2 s x the batch's belt rate).
    np.testing.assert_allclose(ratio, span, rtol=0.06)
    assert ref.pair_belt_t / ref.pair_ref_t == pytest.approx(span, rel=2e-3)


def test_no_pair_spans_an_unweighed_continuous_lot() -> None:
    t, belt, scale = airlock(4, 1.0, continuous=(1.0, 2.0))
    ref = WeigherReference(BELT, REF, 1.0, 1e-3)
    pairs = observe_all(ref, t, belt, scale)
    assert ref.rejected == 1  # the stretch across the continuous lot
    assert ref.pair_belt_t / ref.pair_ref_t == pytest.approx(1.0, rel=2e-3)
    assert all(p.belt_t / p.ref_t < 1.1 for p in pairs)


def test_pairs_chain_boundary_to_boundary_and_a_continuous_lot_breaks_the_chain() -> None:
    t, belt, scale = airlock(4, 1.0, continuous=(1.0, 2.0))
    pairs = observe_all(WeigherReference(BELT, REF, 1.0, 1e-3), t, belt, scale)
    starts = np.array([p.t_start for p in pairs])
    ends = np.array([p.t for p in pairs])
    assert np.all(starts < ends)
    chained = starts[1:] == ends[:-1]
    # One break: the pair across the continuous lot was not formed, the next opens after it.
    assert (~chained).sum() == 1
    gap = int(np.flatnonzero(~chained)[0])
    assert ends[gap] < 1.0 * 3600 + 200
    assert starts[gap + 1] > 2.0 * 3600


def test_a_batch_sent_back_to_the_store_is_not_a_pair() -> None:
    t, belt, scale = airlock(2, 1.0)
    # 40 kg weighed at 1 h but never belted (a lot change returned it): the scale keeps it.
    scale = scale + np.where(t >= 3600, 40.0, 0.0)
    ref = WeigherReference(BELT, REF, 1.0, 1e-3)
    observe_all(ref, t, belt, scale)
    assert ref.rejected >= 1
    assert ref.pair_belt_t / ref.pair_ref_t == pytest.approx(1.0, rel=2e-3)


def test_bad_samples_form_no_pairs() -> None:
    t, belt, scale = airlock(1, 1.0)
    ref = WeigherReference(BELT, REF, 1.0, 1e-3)
    n = len(t)
    tag = np.r_[np.full(n, BELT), np.full(n, REF)]
    got = ref.observe(tag, np.r_[t, t], np.r_[belt, scale], np.full(2 * n, int(Quality.BAD), np.int8))
    assert got == []
    assert ref.pairs == 0


@pytest.fixture(scope="module")
def config() -> LineConfig:
    return load_config(CONFIG)


def test_the_yield_is_reconciled_to_the_scale_and_its_band_narrows(config: LineConfig) -> None:
    """A belt reading 2 % high gives a yield 2 % low; with the scale pairs it is right again."""
    hours = 7.0
    t, belt, scale = airlock(hours, 1.02, seed=4)
    true_feed = belt / 1.02
    delay = config.yield_.transport_delay_min * 60
    bm = 0.45 * np.interp(t - delay, t, true_feed, left=0.0)
    p = YieldPipeline(config)
    names = ("bw_feed.total", "feed.scale_total", "bm.total", "shr.power")
    idx = np.array([config.tag_index(n) for n in names], np.int32)
    for s in range(0, len(t), 50):
        sl = slice(s, s + 50)
        n = len(t[sl])
        p.tick(
            SampleBatch(
                tag=np.repeat(idx[None, :], n, axis=0).ravel(),
                t=np.repeat(T0 + t[sl], len(names)),
                value=np.column_stack([belt[sl], scale[sl], bm[sl], np.full(n, 120.0)]).ravel(),
                quality=np.zeros(n * len(names), np.int8),
                status=np.zeros(n * len(names), np.uint32),
            )
        )
    y = p.tick(SampleBatch.empty()).yield_rolling
    assert y is not None
    assert y.quality is Quality.GOOD
    assert y.value == pytest.approx(0.45, abs=0.0015)  # uncorrected it would read 0.441
    sigma_ref = config.detectors.reference_sigma_rel
    assert y.uncertainty == pytest.approx(
        2 * 0.45 * np.hypot(sigma_ref, config.stream_tag("black_mass").sigma_rel), rel=0.01
    )


def test_no_pair_spans_a_belt_weigher_dropout() -> None:
    t, belt, scale = airlock(3, 1.0)
    keep = ~((t >= 3600) & (t < 3600 + 300))  # the belt weigher silent for 5 minutes
    ref = WeigherReference(BELT, REF, 1.0, 1e-3)
    pairs = []
    for s in range(0, len(t), 37):
        sl = slice(s, s + 37)
        kb = keep[sl]
        n_b, n_r = int(kb.sum()), len(t[sl])
        tag = np.r_[np.full(n_b, BELT), np.full(n_r, REF)]
        pairs += ref.observe(
            tag, np.r_[t[sl][kb], t[sl]], np.r_[belt[sl][kb], scale[sl]], np.zeros(n_b + n_r, np.int8)
        )
    assert not any(3600 <= p.t <= 3600 + 300 + 180 and abs(p.belt_t / p.ref_t - 1) > 0.06 for p in pairs)
    assert ref.pair_belt_t / ref.pair_ref_t == pytest.approx(1.0, rel=2e-3)
