"""A trimmed accuracy report: the gateway's yield against the simulator's truth, in the suite.

`benchmarks/accuracy_report.py` runs S0-S12 over several seeds for 24 h each; here six
scenarios run once (one seed, S3, S4, S6 and S11 shortened to the span their faults need), offline
(`simulators.accuracy`: the plant and its sensors straight into the gateway's pipeline). The
checks are domain.md section 4's pass criteria, plus regression guards tighter than them at
what this seed achieves today, so a change that makes the yield worse fails here first.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from gateway.samples import Quality
from simulators.accuracy import RunRecord, run
from simulators.accuracy_verdict import DRIFT_KINDS, detection_delays, report_for
from simulators.scenario import load_scenario

SEED = 3
HOURS = {"S0": 24.0, "S2": 24.0, "S4": 13.0, "S11": 17.0, "S3": 12.0, "S6": 7.0}
# This seed today: S0 4 h P95 ~0.3 pp, shift bias ~0.2 pp; a regression past these fails.
GUARD_4H_P95_PP = 0.6
GUARD_SHIFT_BIAS_PP = 0.3
GUARD_SPIKES_FLAGGED = 0.97  # 99 of 99 today
GUARD_FALSE_FLAGS = 10  # 5 today


# Readings every 5 s, but every 2 s (as in the full report) where the detector under test
# needs the plant's real sampling: spike verdicts look at neighbouring readings, and the drift
# check at batch pairs whose boundaries coarser sampling blurs.
MEASURE_EVERY_S = {"S3": 2.0, "S6": 2.0}


def _run(name: str) -> RunRecord:
    every = MEASURE_EVERY_S.get(name, 5.0)
    return run(load_scenario(name), seed=SEED, hours=HOURS[name], measure_every_s=every)


@pytest.fixture(scope="module")
def runs() -> dict[str, RunRecord]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return dict(zip(HOURS, pool.map(_run, HOURS), strict=True))


def _failed(name: str, record: RunRecord) -> list[str]:
    rep = report_for(load_scenario(name), [record])
    return [f"{c.name}: {c.measured} (limit {c.limit})" for c in rep.checks if not c.passed]


def test_s0_nominal_meets_the_targets(runs: dict[str, RunRecord]) -> None:
    r = runs["S0"]
    assert _failed("S0", r) == []
    rep = report_for(load_scenario("S0"), [r])
    assert rep.rolling.n > 1000, "the 4 h window published GOOD figures for most of the day"
    assert rep.rolling.availability > 0.95
    assert rep.rolling.p95_pp <= GUARD_4H_P95_PP
    assert rep.shift.n == 2, "the two shifts after the first each have a final GOOD figure"
    assert abs(rep.shift.bias_pp) <= GUARD_SHIFT_BIAS_PP
    # Every GOOD figure's band is honest: |error| within 2 sigma for nearly all of them.
    assert rep.rolling.coverage >= 0.9


def test_s2_lot_yields_follow_the_lots_through_the_dryer(runs: dict[str, RunRecord]) -> None:
    r = runs["S2"]
    assert _failed("S2", r) == []
    good = [fig for _n, fig, _f in r.lots if fig.quality is Quality.GOOD]
    assert len(good) >= 2, "the module lot and the electrode-scrap lot after it each get a GOOD figure"
    assert max(f.value for f in good) - min(f.value for f in good) > 0.2, "42 % and 70 % lots told apart"


def test_s4_dropouts_lose_no_mass_and_a_long_one_is_never_good(runs: dict[str, RunRecord]) -> None:
    r = runs["S4"]
    assert _failed("S4", r) == []
    # The 2 h feed dropout at hour 10 makes the figures over it UNCERTAIN, not absent.
    assert any(p.quality is Quality.UNCERTAIN for p in r.rolling)


def test_s11_rollover_and_reset_lose_no_mass_and_are_alarmed(runs: dict[str, RunRecord]) -> None:
    r = runs["S11"]
    assert _failed("S11", r) == []
    kinds = {kind for _t, kind, _s in r.alarms}
    assert {"totalizer_rollover", "totalizer_reset"} <= kinds


def test_s3_spikes_are_flagged_where_they_were_injected(runs: dict[str, RunRecord]) -> None:
    r = runs["S3"]
    watched = set(r.despiked_tags)
    injected = {(t, name) for t, name in r.spikes_injected if name in watched}
    flagged = set(r.spikes_flagged)
    assert len(injected) >= 50
    # The report over seeds 1-3 flags 99.2 %; this seed alone, 12 h, all of them today.
    assert len(injected & flagged) / len(injected) >= GUARD_SPIKES_FLAGGED
    assert len(flagged - injected) <= GUARD_FALSE_FLAGS
    assert not [a for a in r.alarms if a[1] in {"zero_drift", "span_drift", "stuck_sensor"}]


def test_s6_belt_weigher_zero_drift_is_alarmed_within_two_hours(runs: dict[str, RunRecord]) -> None:
    # Seed 3 has batch pairs after the onset (seeds whose lot at the onset is continuous scrap
    # have no reference for hours: see the README).
    (delay,) = detection_delays([runs["S6"]], "sensor.zero_drift", "zero_drift")
    assert delay is not None, "the drift was never alarmed"
    assert delay < 2 * 3600.0, f"alarmed {delay / 3600:.2f} h after the onset"
    start = runs["S6"].truth_rows[0]["t"]
    early = [t for t, kind, _s in runs["S6"].alarms if kind in DRIFT_KINDS and t < start + 4 * 3600]
    assert early == [], "a drift alarm before the drift began"
