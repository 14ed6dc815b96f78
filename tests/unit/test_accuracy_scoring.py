"""The accuracy report's scoring: every figure against its own run's truth, GOOD ones only."""

from __future__ import annotations

import pytest

from gateway.samples import Quality
from simulators.accuracy import Published, RunRecord
from simulators.accuracy_verdict import clopper_pearson, coverage_check, rolling_score
from simulators.uncertainty_calibration import calibrate


def _run(seed: int, truth: float, figures: list[tuple[float, float, Quality]]) -> RunRecord:
    r = RunRecord("S0", seed, 24.0)
    r.truth_rows = [{"t": t, "yield_rolling": truth} for t in (0.0, 60.0, 120.0, 180.0)]
    r.rolling = [Published(t, v, 0.01, q) for t, v, q in figures]
    return r


def test_pooled_runs_score_each_figure_against_its_own_truth() -> None:
    # Run 1 has an UNCERTAIN figure first: it must not shift which truth run 2's figures meet.
    a = _run(1, 0.40, [(0.0, 0.90, Quality.UNCERTAIN), (60.0, 0.401, Quality.GOOD)])
    b = _run(2, 0.60, [(60.0, 0.602, Quality.GOOD), (120.0, 0.598, Quality.GOOD)])
    score = rolling_score([a, b])
    assert score.n == 3
    assert score.max_pp == pytest.approx(0.2)
    assert score.bias_pp == pytest.approx((0.1 + 0.2 - 0.2) / 3)
    assert score.availability == pytest.approx(3 / 4)


def test_clopper_pearson_matches_tabled_intervals() -> None:
    lo, hi = clopper_pearson(95, 100)
    assert lo == pytest.approx(0.8872, abs=1e-3)
    assert hi == pytest.approx(0.9836, abs=1e-3)
    assert clopper_pearson(3, 3)[0] == pytest.approx(0.2924, abs=1e-3)


def test_error_over_sigma_is_judged_about_zero_not_about_the_sample_mean() -> None:
    # Every figure 1 sigma high: std about the mean would be 0 and call the band too wide;
    # the RMS about zero says the band is as wide as the errors.
    r = _run(1, 0.40, [(t, 0.405, Quality.GOOD) for t in (0.0, 60.0, 120.0)])
    assert rolling_score([r]).z_rms == pytest.approx(1.0)


def test_calibration_counts_one_trial_per_seed() -> None:
    # Nine seeds inside the band and one outside: 90 %, with the interval of 10 trials, not of
    # the 30 figures. Sigma is 0.005 (published uncertainty 0.01 is 2 sigma).
    inside = [_run(s, 0.40, [(t, 0.4025, Quality.GOOD) for t in (0.0, 60.0, 120.0)]) for s in range(1, 10)]
    outside = _run(10, 0.40, [(t, 0.4125, Quality.GOOD) for t in (0.0, 60.0, 120.0)])
    cal = calibrate([*inside, outside])
    assert cal.coverage == pytest.approx(0.9)
    assert (cal.ci_low, cal.ci_high) == pytest.approx(clopper_pearson(9, 10))
    assert cal.z_rms == pytest.approx(((9 * 0.5**2 + 2.5**2) / 10) ** 0.5)
    assert cal.passed


def test_calibration_fails_a_band_twice_too_wide() -> None:
    # Errors of 0.25 sigma at every seed: all inside, but rms(e/σ) says the band is too wide.
    runs = [_run(s, 0.40, [(0.0, 0.40125, Quality.GOOD)]) for s in range(1, 41)]
    cal = calibrate(runs)
    assert cal.coverage == 1.0
    assert cal.ci_high == 1.0
    assert cal.ci_low > 0.9
    assert cal.z_rms == pytest.approx(0.25)
    assert not cal.passed


def test_runs_without_a_good_figure_are_not_measured_rather_than_a_crash() -> None:
    runs = [_run(s, 0.40, [(0.0, 0.40, Quality.UNCERTAIN)]) for s in (1, 2)]
    check = coverage_check(rolling_score(runs), seeds=2)
    assert not check.passed
    assert "not measured" in check.measured
    cal = calibrate(runs)
    assert cal.seeds == []
    assert not cal.passed
