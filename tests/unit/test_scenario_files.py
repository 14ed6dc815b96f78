"""Scenario files: the shipped ones load and check; broken ones fail with every problem named."""

from __future__ import annotations

import pytest

from simulators.plant import PlantParams
from simulators.runner import check_scenario, plant_params_for
from simulators.scenario import SCENARIO_DIR, ScenarioError, available, load_scenario, parse_scenario, resolve

SHIPPED = {f"S{i}" for i in range(13)} | {"C1", "C2", "C3"}


def test_every_domain_scenario_and_the_comm_faults_are_shipped() -> None:
    assert {s.id for s in available()} == SHIPPED


@pytest.mark.parametrize("scenario_id", sorted(SHIPPED - {"C3"}))
def test_shipped_scenario_events_are_accepted_by_their_handlers(scenario_id: str) -> None:
    s = load_scenario(scenario_id)
    assert s.hours >= 4
    check_scenario(s, plant_params_for(s), broker=None)


def test_broker_loss_needs_a_broker_the_simulator_controls() -> None:
    with pytest.raises(ScenarioError, match="needs a broker the simulator controls"):
        check_scenario(load_scenario("C3"), None, broker=None)


def test_ids_resolve_to_files_and_unknown_ids_list_the_known_ones() -> None:
    assert resolve("S1").name == "S1_feed_steps.toml"
    assert resolve("S10").name == "S10_clock_skew.toml"
    assert resolve(str(SCENARIO_DIR / "S6_zero_drift.toml")).name == "S6_zero_drift.toml"
    with pytest.raises(ScenarioError, match=r"known: .*S12"):
        resolve("S99")


def test_problems_are_named_by_key() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(
            {
                "id": "X",
                "title": "t",
                "hours": 2,
                "colour": "red",
                "events": [
                    {"at_h": 1, "kind": "sensor.stuck", "signal": "bm.rate", "duration_s": 5},
                    {"at_h": 0.5, "kind": "process.jam"},
                    {"at_h": 3, "kind": "wind.gust"},
                ],
            }
        )
    text = str(err.value)
    assert "colour: unknown key" in text
    assert "events.2.kind" in text


def test_events_out_of_order_or_after_the_end_are_refused() -> None:
    base = {"id": "X", "title": "t", "hours": 2}
    with pytest.raises(ScenarioError, match="time order"):
        parse_scenario(
            {**base, "events": [{"at_h": 1, "kind": "process.jam"}, {"at_h": 0.5, "kind": "process.jam"}]}
        )
    with pytest.raises(ScenarioError, match="after the scenario"):
        parse_scenario({**base, "events": [{"at_h": 3, "kind": "process.jam"}]})


def test_bad_event_parameters_fail_at_load_not_mid_run() -> None:
    s = parse_scenario(
        {
            "id": "X",
            "title": "t",
            "events": [{"at_h": 1, "kind": "sensor.zero_drift", "signal": "no.such.signal"}],
        }
    )
    with pytest.raises(ScenarioError, match=r"events\[0\] \(sensor.zero_drift at 1.0 h\)"):
        check_scenario(s, None, broker=None)
    s = parse_scenario({"id": "X", "title": "t", "events": [{"at_h": 1, "kind": "process.warp_drive"}]})
    with pytest.raises(ScenarioError, match=r"process\.warp_drive"):
        check_scenario(s, None, broker=None)
    with pytest.raises(ScenarioError, match="duration_s"):
        parse_scenario({"id": "X", "title": "t", "events": [{"at_h": 1, "kind": "comm.opcua_stop"}]})


def test_plant_overrides_must_name_plant_parameters() -> None:
    s = parse_scenario({"id": "X", "title": "t", "plant": {"feed_rate_sp_tph": 1.2}})
    params = plant_params_for(s)
    assert isinstance(params, PlantParams)
    assert params.feed_rate_sp_tph == 1.2
    bad = parse_scenario({"id": "X", "title": "t", "plant": {"flux_capacitor": 1.21}})
    with pytest.raises(ScenarioError, match="flux_capacitor"):
        plant_params_for(bad)
