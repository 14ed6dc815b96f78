"""Every scenario, run offline for its full length: the truth conserves mass and records its events."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from simulators.plant import PlantParams
from simulators.runner import run_offline
from simulators.scenario import available, load_scenario
from simulators.truth import OUTPUT_STREAMS, read_truth

# 5 s steps: the same physics as 1 s (every delay is a multiple), five times faster to run.
FAST = PlantParams(dt_s=5.0)


@pytest.mark.parametrize("scenario_id", sorted(s.id for s in available()))
def test_truth_conserves_mass_and_records_every_event(scenario_id: str, tmp_path: Path) -> None:
    scenario = load_scenario(scenario_id)
    path = tmp_path / "truth.jsonl"
    plant = run_offline(scenario, seed=3, truth_path=path, plant_params=FAST, measure_every_s=60)
    header, rows = read_truth(path)
    assert header["scenario"]["id"] == scenario_id
    assert len(rows) == round(scenario.hours * 60) + 1
    previous: dict[str, float] = {}
    for r in rows:
        feed = r["feed_total_t"]
        outputs = sum(r[f"{s}_total_t"] for s in OUTPUT_STREAMS)
        # feed = outputs + hold-up, to 1e-9 relative (absolute at the very start).
        assert abs(feed - outputs - r["holdup_t"]) <= 1e-9 * max(feed, 1e-6), r
        for key in ("feed_total_t", *(f"{s}_total_t" for s in OUTPUT_STREAMS)):
            assert r[key] >= previous.get(key, 0.0), (key, r["t"])  # true totals never fall
            previous[key] = r[key]
        y = r["yield_rolling"]
        assert y is None or 0.0 <= y <= 1.0
    _, events = read_truth(path, kind="event")
    assert [(e["event"], e["t"]) for e in events] == [
        (e.kind, rows[0]["t"] + e.at_h * 3600) for e in scenario.events
    ]
    _, lots = read_truth(path, kind="lot")
    for lot in lots:  # a complete lot's outputs add up to what was fed of it
        assert math.isclose(sum(lot[f"{s}_t"] for s in OUTPUT_STREAMS), lot["fed_t"], rel_tol=1e-9)
    ledger_fed = sum(lot.fed_kg for lot in plant.lot_ledger()) / 1000
    assert math.isclose(ledger_fed, rows[-1]["feed_total_t"], rel_tol=1e-9)


def test_lot_change_scenario_has_the_lot_yields_of_its_feed_types(tmp_path: Path) -> None:
    path = tmp_path / "s2.jsonl"
    run_offline(load_scenario("S2"), seed=5, truth_path=path, plant_params=FAST)
    _, lots = read_truth(path, kind="lot")
    by_type: dict[str, list[float]] = {}
    for lot in lots:
        by_type.setdefault(lot["feed_type"], []).append(lot["yield"])
    assert set(by_type) == {"eol_nmc_module", "coated_electrode_scrap"}
    assert max(by_type["eol_nmc_module"]) < 0.5 < min(by_type["coated_electrode_scrap"])
    _, shifts = read_truth(path, kind="shift")
    assert len(shifts) >= 2
    assert all(s["yield_material"] is None or 0.3 < s["yield_material"] < 0.85 for s in shifts)


def test_same_seed_same_truth_and_a_different_seed_differs(tmp_path: Path) -> None:
    s6 = load_scenario("S6")
    short = dataclasses.replace(FAST)
    a, b, c = (tmp_path / f"{n}.jsonl" for n in "abc")
    for path, seed in ((a, 7), (b, 7), (c, 8)):
        run_offline(s6, seed=seed, hours=6, truth_path=path, plant_params=short, measure_every_s=60)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
