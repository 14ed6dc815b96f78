"""The accuracy report's scoring: every figure against its own run's truth, GOOD ones only."""

from __future__ import annotations

import pytest

from gateway.samples import Quality
from simulators.accuracy import Published, RunRecord
from simulators.accuracy_verdict import clopper_pearson, rolling_score


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
