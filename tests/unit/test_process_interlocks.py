"""The simulated PLC's feed interlocks, line start/stop and the shredder's jam sequence."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simulators.plant import Plant
from simulators.process.interlocks import DTDT_HIGH, O2_A_HIGH, O2_B_HIGH, O2_DISAGREE

PURGE_S = 300


def run_until(plant: Plant, cond: Callable[[dict[str, float]], bool], limit_s: float) -> dict[str, float]:
    for _ in range(round(limit_s / plant.dt_s)):
        plant.step()
        s = plant.signals()
        if cond(s):
            return s
    pytest.fail(f"condition not met within {limit_s} s")


def settled_plant(seed: int = 21) -> Plant:
    plant = Plant(seed=seed)
    plant.advance(600)
    s = plant.signals()
    assert s["il.feed_trip"] == 0
    assert s["il.feed_permissive"] == 1
    assert s["il.purge_done"] == 1
    return plant


def test_o2_ingress_trips_the_feed_which_restarts_after_purge_and_permissive() -> None:
    plant = settled_plant()
    plant.apply_event("process.o2_ingress", {"peak_vol_pct": 5.0, "duration_s": 120.0})
    s = run_until(plant, lambda s: s["il.feed_trip"] == 1, 120)
    t_trip = plant.t_s
    # The trip latched on the step an analyser reached 3.0 %, naming it.
    assert max(s["shr.o2_a"], s["shr.o2_b"]) >= 3.0
    assert s["il.trip_reason"] in (O2_A_HIGH, O2_B_HIGH)
    assert s["il.feed_permissive"] == 0
    assert s["il.purge_done"] == 0
    holdup_at_trip = plant.holdup_kg()

    # The PLC keeps setpoints written while tripped, but the feeder stays off.
    plant.set_setpoint("shr.feed_rate_sp", 1.0)
    assert plant.setpoints()["shr.feed_rate_sp"] == 1.0
    o2_ok_since: float | None = None
    while True:
        plant.step()
        s = plant.signals()
        if s["il.feed_trip"] == 0:
            break
        assert s["bw_feed.rate"] == 0.0
        assert s["n2.flow"] > 41.0  # purging
        both_low = s["shr.o2_a"] < 2.0 and s["shr.o2_b"] < 2.0
        o2_ok_since = (o2_ok_since or plant.t_s) if both_low else None
        assert plant.t_s - t_trip < 3600, "the trip never reset"
    t_reset = plant.t_s
    assert s["il.trip_reason"] == 0
    assert s["il.feed_permissive"] == 1
    assert s["il.purge_done"] == 1
    assert t_reset - t_trip >= PURGE_S
    assert o2_ok_since is not None
    assert t_reset - o2_ok_since >= 59.0
    # Material kept moving while the feed was off: the line ran emptier.
    assert plant.holdup_kg() < holdup_at_trip
    # The feeder restarts and ramps to the setpoint written during the trip.
    run_until(plant, lambda s: s["bw_feed.rate"] > 0.0, 200)
    plant.advance(900)
    rates = []
    for _ in range(1200):
        plant.step()
        rates.append(plant.signals()["bw_feed.rate"])
    assert sum(rates) / len(rates) == pytest.approx(1.0, rel=0.15)


def test_o2_ingress_below_the_trip_limit_does_not_trip() -> None:
    plant = settled_plant()
    plant.apply_event("process.o2_ingress", {"peak_vol_pct": 2.5, "duration_s": 60.0})
    for _ in range(600):
        plant.step()
        assert plant.interlocks()["il.feed_trip"] == 0


def test_analyser_disagreement_trips_and_clears_after_the_fault_is_fixed() -> None:
    plant = settled_plant()
    plant.apply_event("process.o2_analyser_offset", {"analyser": "b", "offset_vol_pct": 0.8})
    plant.step()
    il = plant.interlocks()
    assert il["il.feed_trip"] == 1
    assert il["il.trip_reason"] == O2_DISAGREE
    plant.advance(2 * PURGE_S)
    assert plant.interlocks()["il.feed_trip"] == 1  # the cause is still there
    plant.apply_event("process.o2_analyser_offset", {"analyser": "b", "offset_vol_pct": 0.0})
    run_until(plant, lambda s: s["il.feed_trip"] == 0, 200)


def test_hotspot_rise_trips_on_dtdt() -> None:
    plant = settled_plant()
    plant.apply_event("process.hotspot", {"peak_c": 150.0, "duration_s": 60.0})
    s = run_until(plant, lambda s: s["il.feed_trip"] == 1, 60)
    assert s["il.trip_reason"] == DTDT_HIGH
    assert s["therm.dTdt"] > 1.0


def test_line_start_feeds_only_after_the_purge() -> None:
    plant = settled_plant()
    plant.apply_event("process.line_stop", {})
    plant.step()
    assert plant.signals()["bw_feed.rate"] == 0.0
    plant.advance(1800)
    s = plant.signals()
    assert s["bw_feed.rate"] == 0.0
    assert s["bw_feed.speed"] == 0.0
    assert s["il.purge_done"] == 0
    plant.apply_event("process.line_start", {})
    t_start = plant.t_s
    s = run_until(plant, lambda s: s["bw_feed.rate"] > 0.0, 2 * PURGE_S)
    assert plant.t_s - t_start > PURGE_S
    assert s["il.purge_done"] == 1
    assert s["il.feed_trip"] == 0


def test_jam_reverses_and_stops_the_throughput_briefly() -> None:
    plant = settled_plant()
    before = plant.signals()["shr.reverse_count"]
    plant.apply_event("process.jam", {})
    torques, rates = [], []
    for _ in range(30):
        plant.step()
        s = plant.signals()
        torques.append(s["shr.torque_pct"])
        rates.append(s["bw_feed.rate"])
    assert plant.signals()["shr.reverse_count"] >= before + 1
    assert max(torques) >= 140.0
    assert rates[:10] == [0.0] * 10  # the feeder is held while the rotor reverses
    run_until(plant, lambda s: s["bw_feed.rate"] > 0.0, 600)
    assert abs(plant.balance_residual_kg()) <= 1e-9 * plant.feed_in_kg


@pytest.mark.parametrize(
    ("kind", "params", "match"),
    [
        ("process.nope", {}, "unknown process event"),
        ("process.o2_ingress", {"peak_vol_pct": 5.0}, "missing"),
        ("process.o2_ingress", {"peak_vol_pct": 5.0, "duration_s": 60.0, "x": 1.0}, "unexpected"),
        ("process.o2_ingress", {"peak_vol_pct": 30.0, "duration_s": 60.0}, "peak_vol_pct"),
        ("process.o2_ingress", {"peak_vol_pct": "high", "duration_s": 60.0}, "finite number"),
        ("process.lot_change", {"feed_type": "lfp_pack"}, "unknown feed_type"),
        ("process.feed_rate", {"tph": 3.0}, "outside"),
        ("process.dryer_holdup_swing", {"amplitude_kg": 5000.0, "period_h": 4.0}, "amplitude_kg"),
        ("process.o2_analyser_offset", {"analyser": "c", "offset_vol_pct": 1.0}, "analyser"),
    ],
)
def test_bad_events_are_refused_clearly(kind: str, params: dict[str, float | str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Plant(seed=0).apply_event(kind, params)
