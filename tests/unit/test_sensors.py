"""The sensor layer: every effect shows in the readings as specified, faults act over their
windows, and everything is deterministic and independent per signal (no network)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from simulators.plant import SENSOR_DOMAIN, Plant, seeded_stream
from simulators.sensor_specs import STREAM_NOISE, STREAM_SPAN
from simulators.sensors import (
    DEFAULT_SENSOR_SPECS,
    LEGACY_NOISE_BLOCK,
    SensorLayer,
    SensorSpec,
    WeigherSpec,
)

T0 = 1_767_600_000.0  # plant epoch start of these tests


@dataclass(frozen=True)
class Info:
    unit: str
    kind: str


SIGNALS: dict[str, Info] = {
    "a.level": Info("m", "analog"),
    "b.temp": Info("°C", "analog"),
    "c.flow": Info("m3/h", "analog"),
    "w.rate": Info("t/h", "analog"),
    "w.total": Info("t", "total"),
    "w.speed": Info("m/s", "analog"),
    "e.total": Info("kWh", "total"),
    "x.count": Info("-", "counter"),
    "x.run": Info("-", "state"),
    "lot.id": Info("-", "id"),
}

SPECS: dict[str, SensorSpec] = {
    "a.level": SensorSpec(noise_abs=1.0, floor=None),
    "b.temp": SensorSpec(noise_abs=0.5, floor=None),
    "c.flow": SensorSpec(floor=None),  # noise-free: effects show exactly
    "w.rate": SensorSpec(floor=None),
    "w.total": SensorSpec(quantum=0.001),
}

EXACT_WEIGHER = (WeigherSpec("w", span_sigma_rel=0.0),)


def layer(seed: int = 1, specs: Mapping[str, SensorSpec] = SPECS) -> SensorLayer:
    return SensorLayer.default(seed=seed, specs=specs, weighers=EXACT_WEIGHER, signals=SIGNALS)


def truth(t: float) -> dict[str, Any]:
    """A little plant: constant levels, 1 t/h through the weigher, a counter, a state, an id."""
    h = (t - T0) / 3600.0
    return {
        "a.level": 100.0,
        "b.temp": 40.0,
        "c.flow": 10.0 + h,
        "w.rate": 1.0,
        "w.total": 5.0 + h,
        "w.speed": 0.3,
        "e.total": 1000.0 + 50.0 * h,
        "x.count": int(h * 10),
        "x.run": True,
        "lot.id": "L-0042",
    }


def run(
    sl: SensorLayer, n: int, dt: float = 1.0, fn: Callable[[float], dict[str, Any]] = truth
) -> list[tuple[float, dict[str, tuple[Any, float]]]]:
    out = []
    for k in range(n):
        t = T0 + k * dt
        out.append((t, sl.measure_timed(fn(t), t)))
    return out


# -- background: the default layer ----------------------------------------------------------
def test_original_signals_draw_from_the_original_noise_block() -> None:
    # The block of normals per call, in the original order, keeps readings identical to the
    # layer before fault injection existed (for the same seed).
    seed = 11
    values = {name: 100.0 for name in LEGACY_NOISE_BLOCK} | {"bw_feed.total": 3.0, "bm.total": 1.0}
    sl = SensorLayer.default(seed=seed)
    spans = seeded_stream(seed, SENSOR_DOMAIN, STREAM_SPAN).standard_normal(2).tolist()
    z = seeded_stream(seed, SENSOR_DOMAIN, STREAM_NOISE).standard_normal(2 * len(LEGACY_NOISE_BLOCK)).tolist()
    first = sl.measure(values, 0.0)
    second = sl.measure(values, 1.0)
    for i, name in enumerate(LEGACY_NOISE_BLOCK):
        v = (
            100.0 * (1.0 + 0.004 * spans[0 if name == "bw_feed.rate" else 1])
            if name.endswith(".rate")
            else 100.0
        )
        spec = DEFAULT_SENSOR_SPECS[name]
        sigma = math.sqrt(spec.noise_abs**2 + (spec.noise_rel * v) ** 2)
        assert first[name] == v + z[i] * sigma
        if spec.t90_s == 0:  # lagged analysers see the same noise, through their lag state
            assert second[name] == v + z[len(LEGACY_NOISE_BLOCK) + i] * sigma


def test_states_ids_and_counters_pass_through_untouched() -> None:
    sl = layer()
    for t, m in run(sl, 50, dt=600.0):
        true = truth(t)
        for name in ("x.count", "x.run", "lot.id"):
            assert m[name] == (true[name], t)
            assert type(m[name][0]) is type(true[name])


def test_a_spec_that_gives_a_state_noise_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"x\.run: a state signal cannot have noise_abs"):
        layer(specs={"x.run": SensorSpec(noise_abs=1.0)})
    with pytest.raises(ValueError, match="totalizer gets no white noise"):
        layer(specs={"w.total": SensorSpec(noise_rel=0.01)})


def test_quantisation_defaults_to_the_unit_resolution_on_totals() -> None:
    sl = layer()
    for t, m in run(sl, 30, dt=37.0):
        assert m["w.total"][0] * 1000 == pytest.approx(round(m["w.total"][0] * 1000), abs=1e-9)
        assert m["e.total"][0] * 10 == pytest.approx(round(m["e.total"][0] * 10), abs=1e-9)  # kWh: 0.1
        assert m["w.total"][0] == pytest.approx(truth(t)["w.total"], abs=0.0005 + 1e-12)
    coarse = layer(specs={"c.flow": SensorSpec(quantum=0.5, floor=None)})
    readings = {m["c.flow"][0] for _, m in run(coarse, 400, dt=60.0)}
    assert all(r / 0.5 == round(r / 0.5) for r in readings)
    assert len(readings) > 5


def test_noise_has_the_specified_sigma_and_its_own_stream() -> None:
    sl = layer()
    errs = [m["a.level"][0] - 100.0 for _, m in run(sl, 4000)]
    assert statistics.fmean(errs) == pytest.approx(0.0, abs=0.1)
    assert statistics.stdev(errs) == pytest.approx(1.0, rel=0.05)


# -- injected faults -------------------------------------------------------------------------
def test_spikes_occur_at_the_given_rate_with_heavy_tailed_10_to_50_sigma_magnitudes() -> None:
    n, p = 20_000, 0.01
    sl = layer()
    sl.apply_event("sensor.spikes", {"signal": "a.level", "probability": p}, T0)
    rows = run(sl, n)
    big = [(t, m["a.level"][0] - 100.0) for t, m in rows if abs(m["a.level"][0] - 100.0) > 6.0]
    expected = n * p
    assert abs(len(big) - expected) < 5 * math.sqrt(expected)
    # Sigma is the channel's noise (1.0): every spike is 10-50 sigma on top of the noise.
    assert all(10.0 - 6.0 < abs(d) < 50.0 + 6.0 for _, d in big)
    records = sl.drain_spikes()
    assert [(r.t, r.signal) for r in records] == [(t, "a.level") for t, _ in big]
    assert all(10.0 <= r.sigma_mult <= 50.0 for r in records)
    mults = [r.sigma_mult for r in records]
    assert statistics.median(mults) < 25.0  # Pareto(1) on [10, 50]: median 16.7
    assert max(mults) > 35.0
    assert 0.3 < sum(r.delta > 0 for r in records) / len(records) < 0.7
    assert sl.drain_spikes() == []


def test_spikes_act_only_within_their_window_and_fall_back_to_a_relative_sigma() -> None:
    sl = layer()
    sl.apply_event("sensor.spikes", {"signal": "c.flow", "probability": 1.0, "duration_s": 10.0}, T0 + 100.0)
    for t, m in run(sl, 200):
        err = m["c.flow"][0] - truth(t)["c.flow"]
        if T0 + 100.0 <= t < T0 + 110.0:
            # c.flow has no noise: sigma = 1 % of the reading.
            assert 10.0 * 0.01 * truth(t)["c.flow"] <= abs(err) <= 50.0 * 0.01 * truth(t)["c.flow"] + 1e-9
        else:
            assert err == 0.0


def test_a_spike_on_a_noise_free_zero_reading_is_not_logged_as_injected() -> None:
    # Its relative sigma is 0, so the reading does not move: no spike reached the data.
    sl = layer()
    sl.apply_event("sensor.spikes", {"signal": "c.flow", "probability": 1.0, "duration_s": 10.0}, T0)

    def stopped(t: float) -> dict[str, Any]:
        return {**truth(t), "c.flow": 0.0 if t < T0 + 5.0 else 10.0}

    readings = run(sl, 10, fn=stopped)
    assert all(m["c.flow"][0] == 0.0 for t, m in readings if t < T0 + 5.0)
    assert [r.t for r in sl.drain_spikes()] == [T0 + k for k in range(5, 10)]


def test_a_dropout_removes_the_reading_exactly_over_its_window() -> None:
    sl = layer()
    sl.apply_event("sensor.dropout", {"signal": ["a.level", "x.run"], "duration_s": 30.0}, T0 + 60.0)
    for t, m in run(sl, 200):
        inside = T0 + 60.0 <= t < T0 + 90.0
        assert ("a.level" in m) is not inside
        assert ("x.run" in m) is not inside
        assert "b.temp" in m


def test_poisson_dropouts_follow_the_generated_schedule_whatever_the_cadence() -> None:
    hours = 4.0
    event = {"signal": "b.temp", "rate_per_h": 15.0, "mean_length_s": 60.0, "duration_s": hours * 3600}
    fine, coarse = layer(), layer()
    fine.apply_event("sensor.dropouts", event, T0)
    coarse.apply_event("sensor.dropouts", event, T0)
    rows = run(fine, int(hours * 3600), dt=1.0)
    run(coarse, int(hours * 3600 / 7), dt=7.0)
    starts: set[float] = set()
    lengths: list[float] = []
    missing = 0
    for t, m in rows:
        children = [f for f in fine.active_faults(t) if f.get("parent") == "sensor.dropouts"]
        assert ("b.temp" not in m) == bool(children)
        missing += "b.temp" not in m
        for c in children:
            if c["start"] not in starts:
                starts.add(c["start"])
                lengths.append(c["end"] - c["start"])
            assert c["signals"] == ["b.temp"]
        if t % 97 == 0:
            assert coarse.active_faults(t) == fine.active_faults(t)
    assert 35 <= len(starts) <= 90  # Poisson(60)
    assert 30.0 < statistics.fmean(lengths) < 110.0  # lognormal, mean 60 s
    assert 0.1 < missing / len(rows) < 0.4


def test_a_stuck_reading_holds_the_last_value_then_goes_live_again() -> None:
    sl = layer()
    sl.apply_event("sensor.stuck", {"signal": "c.flow", "duration_s": 60.0}, T0 + 100.0)
    sl.apply_event(
        "sensor.stuck",
        {"signal": "w.total", "duration_s": 60.0, "freeze_timestamp": True},
        T0 + 100.0,
    )
    sl.apply_event("sensor.stuck", {"signal": "b.temp", "value": -5.0, "duration_s": 10.0}, T0 + 100.0)
    rows = dict(run(sl, 300))
    before = rows[T0 + 99.0]
    for k in range(100, 160):
        m = rows[T0 + k]
        assert m["c.flow"] == (before["c.flow"][0], T0 + k)
        assert m["w.total"] == before["w.total"]  # value and source timestamp frozen
    for k in range(100, 110):
        assert rows[T0 + k]["b.temp"][0] == -5.0
    for k in range(160, 300):
        assert rows[T0 + k]["c.flow"] == (truth(T0 + k)["c.flow"], T0 + k)
        assert rows[T0 + k]["w.total"][1] == T0 + k
    assert rows[T0 + 110.0]["b.temp"][0] != -5.0


def test_zero_drift_grows_linearly_at_the_ramp_and_then_persists() -> None:
    sl = layer()
    sl.apply_event("sensor.zero_drift", {"signal": "c.flow", "ramp_per_h": 0.6, "duration_h": 2.0}, T0 + 3600)
    for t, m in run(sl, 5 * 60, dt=60.0):
        h = (t - T0) / 3600.0
        expected = 0.6 * min(max(h - 1.0, 0.0), 2.0)
        assert m["c.flow"][0] - truth(t)["c.flow"] == pytest.approx(expected, abs=1e-9)
    active = sl.active_faults(T0 + 4.5 * 3600)
    assert [(f["kind"], f["signals"], f["end"]) for f in active] == [("sensor.zero_drift", ["c.flow"], None)]
    assert sl.active_faults(T0 + 3599.0) == []


def test_zero_drift_on_a_noisy_signal_moves_its_mean_at_the_ramp() -> None:
    sl = layer()
    sl.apply_event("sensor.zero_drift", {"signal": "a.level", "ramp_per_h": 3.0, "duration_h": 8.0}, T0)
    rows = run(sl, 8 * 360, dt=10.0)
    hours = np.array([(t - T0) / 3600 for t, _ in rows])
    errs = np.array([m["a.level"][0] - 100.0 for _, m in rows])
    slope, icpt = np.polyfit(hours, errs, 1)
    assert slope == pytest.approx(3.0, rel=0.02)
    assert icpt == pytest.approx(0.0, abs=0.1)


def test_weigher_zero_drift_acts_on_rate_and_integrates_into_the_total() -> None:
    sl = layer()
    # S6-style: the zero of weigher w drifts 0.1 t/h per hour for 2 h from hour 1.
    sl.apply_event("sensor.zero_drift", {"signal": "w", "ramp_per_h": 0.1, "duration_h": 2.0}, T0 + 3600)
    rows = run(sl, 4 * 360 + 1, dt=10.0)
    t_end, m_end = rows[-1]
    assert m_end["w.rate"][0] == pytest.approx(1.0 + 0.2, abs=1e-12)
    # Integral of the offset: 0.5 * 2 h * 0.2 t/h + 1 h * 0.2 t/h = 0.4 t.
    assert m_end["w.total"][0] - truth(t_end)["w.total"] == pytest.approx(0.4, abs=0.0011)
    totals = [m["w.total"][0] for _, m in rows]
    assert all(b >= a for a, b in itertools.pairwise(totals))


def test_a_stopped_belt_neither_shows_nor_integrates_its_zero_error() -> None:
    sl = layer()
    sl.apply_event("sensor.zero_drift", {"signal": "w.rate", "offset": 0.05}, T0)

    def stopped(t: float) -> dict[str, Any]:
        return truth(T0) | {"w.rate": 0.0, "w.speed": 0.0}

    rows = run(sl, 100, dt=60.0, fn=stopped)
    assert {m["w.rate"][0] for _, m in rows} == {0.0}
    assert {m["w.total"][0] for _, m in rows} == {5.0}


def test_span_drift_moves_the_ratio_to_truth_by_total_rel_over_the_period() -> None:
    sl = layer()
    sl.apply_event("sensor.span_drift", {"signal": "w", "total_rel": -0.02, "over_h": 2.0}, T0)
    sl.apply_event("sensor.span_drift", {"signal": "c.flow", "total_rel": 0.05, "over_h": 1.0}, T0)
    rows = dict(run(sl, 3 * 60 + 1, dt=60.0))
    for h, ratio in ((0.0, 1.0), (1.0, 0.99), (2.0, 0.98), (3.0, 0.98)):
        assert rows[T0 + h * 3600]["w.rate"][0] == pytest.approx(ratio, abs=1e-12)
    assert rows[T0 + 1800]["c.flow"][0] / truth(T0 + 1800)["c.flow"] == pytest.approx(1.025)
    # After the drift the totalizer's increments carry the full -2 %.
    inc = rows[T0 + 3 * 3600]["w.total"][0] - rows[T0 + 2 * 3600]["w.total"][0]
    assert inc == pytest.approx(0.98, abs=0.0011)


def test_lag_reaches_90_percent_at_t90_whatever_the_cadence() -> None:
    def step(t: float) -> dict[str, Any]:
        return {"c.flow": 1.0 if t >= T0 + 100 else 0.0, "b.temp": 1.0 if t >= T0 + 100 else 0.0}

    specs = {"c.flow": SensorSpec(t90_s=10.0, floor=None), "b.temp": SensorSpec(floor=None)}
    sl = layer(specs=specs)
    sl.apply_event("sensor.lag", {"signal": "b.temp", "t90_s": 30.0}, T0)
    rows = run(sl, 300, fn=step)
    for name, t90 in (("c.flow", 10.0), ("b.temp", 30.0)):
        first = next(t for t, m in rows if m[name][0] >= 0.9 - 1e-9)
        assert first == T0 + 100 + t90
        assert rows[99][1][name][0] == 0.0
    fast = dict(run(layer(specs=specs), 600, dt=0.5, fn=step))
    slow = dict(run(layer(specs=specs), 150, dt=2.0, fn=step))
    for t, m in slow.items():
        assert m["c.flow"][0] == pytest.approx(fast[t]["c.flow"][0], abs=1e-12)


def test_a_noise_event_changes_the_instrument_for_its_window() -> None:
    sl = layer()
    sl.apply_event("sensor.noise", {"signal": "c.flow", "noise_abs": 2.0, "duration_s": 2000.0}, T0 + 1000)
    rows = run(sl, 4000)
    inside = [m["c.flow"][0] - truth(t)["c.flow"] for t, m in rows if T0 + 1000 <= t < T0 + 3000]
    outside = [m["c.flow"][0] - truth(t)["c.flow"] for t, m in rows if not T0 + 1000 <= t < T0 + 3000]
    assert statistics.stdev(inside) == pytest.approx(2.0, rel=0.1)
    assert set(outside) == {0.0}


def test_sample_and_hold_and_transport_delay() -> None:
    specs = {"c.flow": SensorSpec(hold_s=5.0, floor=None), "b.temp": SensorSpec(delay_s=30.0, floor=None)}

    def ramp(t: float) -> dict[str, Any]:
        return {"c.flow": t - T0, "b.temp": t - T0}

    rows = run(layer(specs=specs), 200, fn=ramp)
    for t, m in rows:
        sample_t = math.floor(t / 5.0) * 5.0
        assert m["c.flow"] == (sample_t - T0, sample_t)
        assert m["b.temp"][0] == max(t - 30.0 - T0, 0.0)


def test_clock_skew_offsets_the_timestamps_of_its_group_only() -> None:
    plain, skewed = layer(), layer()
    skewed.apply_event(
        "sensor.clock_skew", {"signals": ["a.level", "x.run"], "offset_s": 30.0, "duration_s": 100.0}, T0 + 50
    )
    skewed.apply_event("sensor.clock_skew", {"signal": "b.temp", "offset_s": -2.0}, T0)
    for (t, a), (_, b) in zip(run(plain, 300), run(skewed, 300), strict=True):
        offset = 30.0 if T0 + 50 <= t < T0 + 150 else 0.0
        assert b["a.level"] == (a["a.level"][0], t + offset)
        assert b["x.run"] == (True, t + offset)
        assert b["b.temp"] == (a["b.temp"][0], t - 2.0)
        assert b["c.flow"] == a["c.flow"]


def test_rollover_wraps_at_the_modulus_and_keeps_increments() -> None:
    sl = layer()
    sl.apply_event("sensor.rollover", {"signal": "w.total", "modulus": 8.0}, T0)
    sl.apply_event("sensor.rollover", {"signal": "x.count", "modulus": 16}, T0)
    rows = run(sl, 7 * 60, dt=60.0)
    wraps = 0
    for (t0, a), (t1, b) in itertools.pairwise(rows):
        assert 0.0 <= b["w.total"][0] < 8.0
        d = b["w.total"][0] - a["w.total"][0]
        wraps += d < 0
        true_d = truth(t1)["w.total"] - truth(t0)["w.total"]
        assert d % 8.0 == pytest.approx(true_d, abs=0.0011)
        assert b["x.count"][0] == truth(t1)["x.count"] % 16
        assert isinstance(b["x.count"][0], int)
    assert wraps == 1  # the total runs from 5 t to 12 t


def test_reset_restarts_the_total_at_zero_and_keeps_increments() -> None:
    sl = layer()
    sl.apply_event("sensor.reset", {"signal": ["e.total", "w.total"]}, T0 + 1800)
    rows = dict(run(sl, 121, dt=60.0))
    for k in range(30, 121):
        t = T0 + 60.0 * k
        expected = 50.0 * (k - 30) / 60.0
        assert rows[t]["e.total"][0] == pytest.approx(expected, abs=0.05 + 1e-9)
        assert rows[t]["w.total"][0] == pytest.approx(expected / 50.0, abs=0.0011)
    assert rows[T0 + 1800]["e.total"][0] == 0.0
    assert rows[T0 + 1740]["e.total"][0] == pytest.approx(1000.0 + 50.0 * 29 / 60, abs=0.05 + 1e-9)


# -- determinism, independence, API checks ----------------------------------------------------
def _with_events(sl: SensorLayer) -> SensorLayer:
    sl.apply_event("sensor.spikes", {"signal": "a.level", "probability": 0.05}, T0)
    sl.apply_event("sensor.dropouts", {"signal": "a.level", "rate_per_h": 30.0, "mean_length_s": 20.0}, T0)
    sl.apply_event("sensor.noise", {"signal": "a.level", "noise_rel": 0.1}, T0 + 100)
    sl.apply_event("sensor.zero_drift", {"signal": "w", "ramp_per_h": 1.0, "duration_h": 1.0}, T0)
    return sl


def test_same_seed_and_events_give_identical_readings() -> None:
    a = run(_with_events(layer(seed=5)), 600)
    b = run(_with_events(layer(seed=5)), 600)
    c = run(_with_events(layer(seed=6)), 600)
    assert a == b
    assert a != c


def test_faults_on_one_signal_do_not_change_another() -> None:
    plain = run(layer(seed=3), 600)
    busy = run(_with_events(layer(seed=3)), 600)
    assert any(p["a.level"] != b.get("a.level") for (_, p), (_, b) in zip(plain, busy, strict=True))
    for (_, p), (_, b) in zip(plain, busy, strict=True):
        assert p["b.temp"] == b["b.temp"]
        assert p["c.flow"] == b["c.flow"]


def test_faults_on_a_default_signal_leave_the_others_unchanged() -> None:
    values = {name: 50.0 for name in LEGACY_NOISE_BLOCK}
    plain, busy = SensorLayer.default(seed=2), SensorLayer.default(seed=2)
    busy.apply_event("sensor.spikes", {"signal": "shr.o2_a", "probability": 0.5}, 0.0)
    busy.apply_event("sensor.noise", {"signal": "shr.o2_a", "noise_abs": 3.0}, 0.0)
    for k in range(200):
        p, b = plain.measure(values, float(k)), busy.measure(values, float(k))
        assert {n: v for n, v in p.items() if n != "shr.o2_a"} == {
            n: v for n, v in b.items() if n != "shr.o2_a"
        }


def test_the_default_layer_knows_the_plant_signals() -> None:
    sl = SensorLayer.default(seed=1)
    sl.apply_event("sensor.span_drift", {"signal": "bw_feed", "total_rel": -0.02, "over_h": 8.0}, 0.0)
    sl.apply_event("sensor.stuck", {"signal": "bw_feed.rate", "duration_s": 60.0}, 0.0)
    with pytest.raises(ValueError, match=r"unknown signal 'bw_feed\.rat'"):
        sl.apply_event("sensor.stuck", {"signal": "bw_feed.rat"}, 0.0)


def plant_signals(seed: int, minutes: int, every_s: int = 10) -> list[tuple[float, dict[str, float]]]:
    """The true signals of a default plant, sampled every `every_s` plant seconds."""
    plant = Plant(seed=seed)
    out = []
    for _ in range(minutes * 60 // every_s):
        plant.advance(every_s)
        out.append((T0 + plant.t_s, plant.signals()))
    return out


def test_the_platform_scale_total_is_exact_but_for_its_0_1_kg_display() -> None:
    sl = SensorLayer.default(seed=4)
    readings = []
    for t, true in plant_signals(seed=11, minutes=45):
        m = sl.measure(true, t)["feed.scale_total"]
        assert m == round(true["feed.scale_total"] / 0.1) * 0.1  # no span error, noise or lag
        readings.append(m)
    assert all(b >= a for a, b in itertools.pairwise(readings))
    assert len(set(readings)) > 10
    assert readings[-1] > 500.0
    for kind, params in (
        ("sensor.spikes", {"probability": 0.5}),
        ("sensor.noise", {"noise_abs": 1.0}),
        ("sensor.lag", {"t90_s": 30.0}),
    ):
        with pytest.raises(ValueError, match="a total signal"):
            sl.apply_event(kind, {"signal": "feed.scale_total", **params}, T0)
    sl.apply_event("sensor.rollover", {"signal": "feed.scale_total", "modulus": 1000.0}, T0)


def test_the_scale_total_leaves_every_other_reading_of_a_seed_unchanged() -> None:
    with_it, without = SensorLayer.default(seed=8), SensorLayer.default(seed=8)
    for t, true in plant_signals(seed=2, minutes=30, every_s=5):
        rest = {n: v for n, v in true.items() if n != "feed.scale_total"}
        a, b = with_it.measure(true, t), without.measure(rest, t)
        assert a.pop("feed.scale_total") >= 0.0
        assert a == b


@pytest.mark.parametrize(
    ("kind", "params", "t", "message"),
    [
        ("sensor.explode", {"signal": "a.level"}, T0, "unknown sensor event 'sensor.explode'"),
        ("sensor.spikes", {"signal": "a.level"}, T0, "missing parameter 'probability'"),
        ("sensor.spikes", {"signal": "a.level", "probabilty": 0.1}, T0, "unknown parameter"),
        ("sensor.spikes", {"signal": "a.level", "probability": 0.0}, T0, r"probability must be in \(0, 1\]"),
        ("sensor.spikes", {"signal": "a.level", "probability": 1.5}, T0, "probability must be"),
        (
            "sensor.spikes",
            {"signal": "a.level", "probability": 0.1, "sigma_mult_min": 60},
            T0,
            "sigma_mult_max must be >= sigma_mult_min",
        ),
        ("sensor.spikes", {"signal": "x.run", "probability": 0.1}, T0, "cannot act on 'x.run', a state"),
        ("sensor.spikes", {"signal": "w.total", "probability": 0.1}, T0, "a total signal"),
        ("sensor.dropout", {"signal": "a.level", "duration_s": -1}, T0, "duration_s must be > 0"),
        ("sensor.dropout", {"signal": "a.level", "duration_s": math.nan}, T0, "duration_s must be > 0"),
        ("sensor.dropout", {"signal": "a.level", "duration_s": "30"}, T0, "must be a number"),
        ("sensor.dropout", {"signal": "a.level", "duration_s": True}, T0, "must be a number"),
        ("sensor.dropout", {"duration_s": 5}, T0, "exactly one of 'signal' or 'signals'"),
        ("sensor.dropout", {"signal": "a.level", "signals": ["b.temp"]}, T0, "exactly one of"),
        ("sensor.dropout", {"signal": []}, T0, "non-empty list"),
        ("sensor.dropout", {"signal": ["a.level", "a.level"]}, T0, "listed twice"),
        ("sensor.dropout", {"signal": "nope"}, T0, "unknown signal 'nope'"),
        ("sensor.dropout", {"signal": "a.level"}, math.inf, "start time must be a finite number"),
        ("sensor.dropouts", {"signal": "a.level", "rate_per_h": 1}, T0, "missing parameter 'mean_length_s'"),
        ("sensor.stuck", {"signal": "a.level", "freeze_timestamp": 1}, T0, "must be true or false"),
        ("sensor.zero_drift", {"signal": "a.level"}, T0, "non-zero ramp_per_h"),
        ("sensor.zero_drift", {"signal": "a.level", "ramp_per_h": 1.0}, T0, "needs duration_h"),
        ("sensor.zero_drift", {"signal": "x.count", "offset": 1.0}, T0, "a counter signal"),
        ("sensor.span_drift", {"signal": "w", "total_rel": -1.0}, T0, "total_rel must be > -1"),
        ("sensor.clock_skew", {"signals": ["a.level"]}, T0, "missing parameter 'offset_s'"),
        ("sensor.rollover", {"signal": "a.level", "modulus": 100}, T0, "an analog signal"),
        ("sensor.rollover", {"signal": "w.total", "modulus": 0}, T0, "modulus must be > 0"),
        ("sensor.reset", {"signal": "lot.id"}, T0, "an id signal"),
        ("sensor.lag", {"signal": "x.run", "t90_s": 10}, T0, "a state signal"),
        ("sensor.noise", {"signal": "a.level"}, T0, "give noise_rel and/or noise_abs"),
        ("sensor.noise", {"signal": "a.level", "noise_rel": -0.1}, T0, "noise_rel must be >= 0"),
        ("sensor.noise", ["a.level"], T0, "params must be a mapping"),
    ],
)
def test_bad_events_are_rejected_with_a_clear_message(kind: str, params: Any, t: float, message: str) -> None:
    sl = layer()
    with pytest.raises(ValueError, match=message):
        sl.apply_event(kind, params, t)
    assert sl.faults == []


def test_a_rejected_event_registers_nothing_even_for_its_valid_signals() -> None:
    sl = layer()
    with pytest.raises(ValueError, match=r"x\.run"):
        sl.apply_event("sensor.noise", {"signal": ["a.level", "x.run"], "noise_abs": 5.0}, T0)
    assert run(sl, 5) == run(layer(), 5)


def test_active_faults_report_kind_signals_and_window() -> None:
    sl = layer()
    sl.apply_event("sensor.stuck", {"signal": "a.level", "duration_s": 60.0}, T0 + 10)
    sl.apply_event("sensor.clock_skew", {"signals": ["b.temp", "c.flow"], "offset_s": 2.0}, T0)
    assert [f["kind"] for f in sl.active_faults(T0)] == ["sensor.clock_skew"]
    assert sl.active_faults(T0 + 10) == [
        {
            "kind": "sensor.stuck",
            "signals": ["a.level"],
            "start": T0 + 10,
            "end": T0 + 70,
            "params": {"duration_s": 60.0, "value": None, "freeze_timestamp": False},
        },
        {
            "kind": "sensor.clock_skew",
            "signals": ["b.temp", "c.flow"],
            "start": T0,
            "end": None,
            "params": {"offset_s": 2.0, "duration_s": None},
        },
    ]
    assert [f["kind"] for f in sl.active_faults(T0 + 70)] == ["sensor.clock_skew"]


def test_a_zero_random_walk_grows_with_the_square_root_of_time() -> None:
    sl = layer(specs={"c.flow": SensorSpec(drift_rw=0.5, floor=None)})
    rows = run(sl, 300 * 60 + 1, dt=60.0)
    offsets = [m["c.flow"][0] - truth(t)["c.flow"] for t, m in rows[::60]]
    hourly = np.diff(offsets)
    assert statistics.stdev(hourly) == pytest.approx(0.5, rel=0.15)
    # The step variance scales with the time since the last call, so the spread per hour does
    # not depend on the cadence (the path itself does: a finer cadence draws more steps).
    coarse = run(layer(specs={"c.flow": SensorSpec(drift_rw=0.5, floor=None)}), 301, dt=3600.0)
    coarse_hourly = np.diff([m["c.flow"][0] - truth(t)["c.flow"] for t, m in coarse])
    assert statistics.stdev(coarse_hourly) == pytest.approx(0.5, rel=0.15)


def test_span_drift_on_a_plain_totalizer_scales_its_increments() -> None:
    sl = layer()
    sl.apply_event("sensor.span_drift", {"signal": "e.total", "total_rel": -0.1}, T0 + 3600)
    rows = dict(run(sl, 3 * 60 + 1, dt=60.0))
    assert rows[T0 + 3600]["e.total"][0] == pytest.approx(1050.0, abs=0.05 + 1e-9)
    inc = rows[T0 + 3 * 3600]["e.total"][0] - rows[T0 + 3600]["e.total"][0]
    assert inc == pytest.approx(0.9 * 100.0, abs=0.1 + 1e-9)
    totals = [rows[t]["e.total"][0] for t in sorted(rows)]
    assert all(b >= a for a, b in itertools.pairwise(totals))
