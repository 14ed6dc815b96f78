"""The pipeline's fault monitor: detectors wired to real ticks, and what they do to the yield."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.alarms import alarm_id
from gateway.config import LineConfig, load_config, parse_config
from gateway.errors import ConfigError
from gateway.fault_monitor import FaultMonitor
from gateway.pipeline import YieldPipeline
from gateway.samples import Quality, SampleBatch

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_767_600_000.0


@pytest.fixture(scope="module")
def config() -> LineConfig:
    return load_config(CONFIG)


def _batch(config: LineConfig, t: float, values: dict[str, float], quality: int = 0) -> SampleBatch:
    names = list(values)
    return SampleBatch(
        tag=np.array([config.tag_index(n) for n in names], np.int32),
        t=np.full(len(names), t),
        value=np.array([values[n] for n in names], np.float64),
        quality=np.full(len(names), quality, np.int8),
        status=np.zeros(len(names), np.uint32),
    )


def _run(
    p: YieldPipeline,
    seconds: float,
    step: float = 2.0,
    start: float = 0.0,
    stuck_feed_rate_from: float | None = None,
    true_delay_s: float | None = None,
) -> list[dict[str, tuple]]:
    """A steady running line: 1.7 t/h feed, 45 % to black mass after the configured delay,
    shredder at 120 kW, a dryer hold-up matching the delay. Returns each tick's conditions."""
    cfg = p.config
    delay = true_delay_s if true_delay_s is not None else cfg.yield_.transport_delay_min * 60
    rng = np.random.default_rng(3)
    out = []
    for i, ts in enumerate(np.arange(start, start + seconds, step)):
        rate = 1.7 * (1 + 0.03 * rng.standard_normal())
        if stuck_feed_rate_from is not None and ts >= stuck_feed_rate_from:
            rate = 1.7123
        values = {
            "bw_feed.total": 1.7 * ts / 3600,
            "bw_feed.rate": rate,
            "bm.total": 0.45 * 1.7 * max(0.0, ts - delay) / 3600,
            "bm.rate": 0.45 * 1.7 * (1 + 0.03 * rng.standard_normal()),
            "shr.power": 120.0 + rng.standard_normal(),
            "dry.mass": 1.7 * (delay - 150) / 3600 * 1000 * (1 + 0.002 * rng.standard_normal()),
        }
        p.tick(_batch(cfg, T0 + ts, values), arrival=T0 + ts)
        if i % 5 == 0:
            out.append(p.alarm_conditions(None))
    return out


def test_a_stuck_rate_is_an_alarm_within_a_minute_and_a_steady_line_raises_none(config: LineConfig) -> None:
    p = YieldPipeline(config)
    quiet = _run(p, 3 * 3600)
    assert not any(quiet[-1]), f"a steady line raised {list(quiet[-1])}"
    p2 = YieldPipeline(config)
    ticks = _run(p2, 3600 + 120, stuck_feed_rate_from=3600)
    # Conditions every 5 ticks of 2 s: the alarm must be up within 60 s of the freeze.
    first = next(i for i, c in enumerate(ticks) if alarm_id("stuck_sensor", "bw_feed.rate") in c)
    assert first * 10 - 3600 <= 60


def test_a_stuck_balance_input_makes_no_yield_good(config: LineConfig) -> None:
    p = YieldPipeline(config)
    _run(p, 6 * 3600)
    assert p.tick(SampleBatch.empty()).yield_rolling.quality is Quality.GOOD
    # bm.total frozen while the line runs: watched through the stuck list?
    data = p.config.model_dump(by_alias=True)
    data["detectors"]["stuck_tags"] = [*data["detectors"]["stuck_tags"], "bm.total"]
    q = YieldPipeline(parse_config(data))
    _run(q, 6 * 3600)
    frozen = q.last_value[q.bm_tag]
    for ts in np.arange(6 * 3600, 6 * 3600 + 60, 2.0):
        q.tick(_batch(q.config, T0 + ts, {"bm.total": frozen, "shr.power": 120.0 + ts % 3}))
    y = q.tick(SampleBatch.empty()).yield_rolling
    assert alarm_id("stuck_sensor", "bm.total") in q.alarm_conditions(y)
    assert y.quality is Quality.UNCERTAIN


def test_a_totalizer_reset_is_alarmed_and_loses_no_mass(config: LineConfig) -> None:
    p = YieldPipeline(config)
    k = p.bm_tag
    for i in range(100):
        # 0.5 t/h; reset to zero at sample 50, counting on from there.
        total = 0.5 * (i * 2.0) / 3600 if i < 50 else 0.5 * ((i - 50) * 2.0) / 3600
        p.tick(SampleBatch(np.array([k], np.int32), np.array([T0 + i * 2.0]), np.array([total]),
                           np.zeros(1, np.int8), np.zeros(1, np.uint32)))  # fmt: skip
    assert p.st_events[1].tolist() == [0, 1, 0]
    # Every interval counts but the one across the reset (the counter's last reading before it
    # is gone): 98 of 99 intervals of 2 s at 0.5 t/h.
    assert p.st_cum[1] == pytest.approx(0.5 * 98 * 2.0 / 3600, rel=1e-9)
    assert alarm_id("totalizer_reset", "bm.total") in p.alarm_conditions(None)


def test_a_wrong_configured_delay_is_found_and_the_windows_follow_the_estimate(config: LineConfig) -> None:
    data = config.model_dump(by_alias=True)
    data["yield"]["transport_delay_min"] = 92.5 * 1.5
    data["yield"]["window_h"] = 5.0
    p = YieldPipeline(parse_config(data))
    _run(p, 6 * 3600, true_delay_s=92.5 * 60)
    status = p.monitor.delay_status()
    assert status.wrong_delay
    assert status.tau_est_s == pytest.approx(92.5 * 60, rel=0.02)
    assert alarm_id("wrong_delay", "yield") in p.alarm_conditions(None)
    y = p.tick(SampleBatch.empty()).yield_rolling
    assert y.delay_min == pytest.approx(92.5, rel=0.02)
    assert y.value == pytest.approx(0.45, abs=0.002)


def test_detectors_naming_an_unknown_tag_refuse_the_config(config: LineConfig) -> None:
    data = config.model_dump(by_alias=True)
    data["detectors"]["stuck_tags"] = ["no.such.tag"]
    with pytest.raises(ConfigError, match=r"detectors.stuck_tags\[0\]: no tag named 'no.such.tag'"):
        parse_config(data)


def _airlock_stream(hours: float, zero_onset_h: float | None, seed: int) -> tuple[np.ndarray, ...]:
    """Sample times (2 s), belt totalizer (t, 1 kg display) and airlock scale totalizer (kg,
    0.1 kg display): 30-90 kg batches every 60-180 s belted evenly over their cycle, the belt
    0.3 % high, plus S6's zero ramp (+0.025 t/h over 8 h) from `zero_onset_h`."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * 3600, 2.0)
    rate = np.zeros(len(t))  # true kg/s on the belt
    scale = np.zeros(len(t))
    start, weighed = 0.0, 0.0
    while start < t[-1]:
        cycle, mass = rng.uniform(60, 180), rng.uniform(30, 90)
        weighed += mass
        scale[t >= start] = weighed
        rate[(t >= start) & (t < start + cycle)] += mass / cycle
        start += cycle
    true_kg = np.concatenate(([0.0], np.cumsum(rate[:-1] * 2.0)))
    zero_kg = np.zeros(len(t))
    if zero_onset_h is not None:
        h = np.clip(t / 3600 - zero_onset_h, 0, None)
        zero_kg = 1000 * 0.025 * np.where(h < 8, h**2 / 16, 4 + (h - 8))
    belt_t = np.round(1.003 * true_kg + zero_kg) / 1000
    return t, belt_t, np.round(scale * 10) / 10


def _drift_alarms(config: LineConfig, hours: float, zero_onset_h: float | None, seed: int) -> list[float]:
    """Hours at which the monitor's feed drift alarm holds, fed the airlock stream tick by tick."""
    feed, scale = config.tag_index("bw_feed.total"), config.tag_index("feed.scale_total")
    monitor = FaultMonitor(config, (feed, config.tag_index("bm.total")))
    n = len(config.tags)
    t, belt, ref = _airlock_stream(hours, zero_onset_h, seed)
    hits = []
    for s in range(0, len(t), 5):  # 10 s ticks
        ts = t[s : s + 5]
        k = len(ts)
        monitor.observe(
            np.r_[np.full(k, feed), np.full(k, scale)],
            T0 + np.r_[ts, ts],
            np.r_[belt[s : s + 5], ref[s : s + 5]],
            np.zeros(2 * k, np.int8),
            (np.zeros(0, np.int64), np.zeros(0)),
            None,
            T0 + float(ts[-1]),
            np.full(n, np.nan),
            np.full(n, int(Quality.BAD), np.int8),
            np.zeros((2, 3), np.int64),
            float("nan"),
        )
        if any(c[0] in ("zero_drift", "span_drift") for c in monitor.conditions().values()):
            hits.append(float(ts[-1]) / 3600)
    return hits


def test_the_monitor_finds_s6s_zero_ramp_within_2_h_and_no_drift_on_a_steady_weigher(
    config: LineConfig,
) -> None:
    for seed in range(3):
        assert _drift_alarms(config, 12, None, seed) == []
        hits = _drift_alarms(config, 7, 4.0, seed)
        assert hits
        assert 4.0 < hits[0] < 6.0
