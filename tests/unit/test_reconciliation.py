"""Mass-balance reconciliation: hand-worked examples, properties of the WLS estimate, gross errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.reconciliation import (
    BalanceModel,
    Reconciled,
    chi2_cdf,
    chi2_quantile,
    chi2_sf,
    ratio_with_uncertainty,
    reconcile,
    reconcile_with_gross_error_elimination,
    regularized_gamma_p,
    regularized_gamma_q,
)

# --- chi-square without scipy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dof", "table_95"), [(1, 3.841), (2, 5.991), (3, 7.815), (5, 11.070), (10, 18.307), (30, 43.773)]
)
def test_chi2_95_quantile_matches_the_table(dof: int, table_95: float) -> None:
    assert chi2_quantile(0.95, dof) == pytest.approx(table_95, abs=6e-4)
    assert chi2_sf(table_95, dof) == pytest.approx(0.05, abs=1e-4)


def test_chi2_far_tail_keeps_its_digits() -> None:
    # Table: chi2(1) 99.9 % quantile 10.828; dof 4 at 40: sf = exp(-20)(1 + 20) exactly.
    assert chi2_quantile(0.999, 1) == pytest.approx(10.828, abs=1e-3)
    assert chi2_sf(40.0, 4) == pytest.approx(math.exp(-20.0) * 21.0, rel=1e-10)


@given(st.floats(0.0, 200.0))
def test_chi2_two_dof_is_the_exponential(x: float) -> None:
    assert chi2_cdf(x, 2) == pytest.approx(-math.expm1(-x / 2.0), abs=1e-13)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2.0), rel=1e-10, abs=1e-300)


@given(st.floats(0.05, 60.0), st.floats(0.0, 150.0))
def test_incomplete_gamma_halves_add_to_one(a: float, x: float) -> None:
    p = regularized_gamma_p(a, x)
    assert 0.0 <= p <= 1.0
    assert p + regularized_gamma_q(a, x) == pytest.approx(1.0, abs=1e-12)


@given(st.integers(1, 40), st.floats(0.01, 0.99))
def test_chi2_quantile_inverts_the_cdf(dof: int, p: float) -> None:
    assert chi2_cdf(chi2_quantile(p, dof), dof) == pytest.approx(p, abs=1e-10)


# --- hand-worked examples ------------------------------------------------------------------------


def test_one_node_three_streams_by_hand() -> None:
    # F = P1 + P2, all sigma 1: r = 101 - 60 - 40 = 1, A V A^T = 3, so each stream moves by 1/3
    # toward balance; Cov = I - a a^T / 3 has diagonal 2/3; gamma = 1/3; W_jj = 1/3, so
    # z = (1/3)/sqrt(1/3) = 0.577 and Test1 = (1/3)/1.96.
    model = BalanceModel(["F", "P1", "P2"], np.array([[1.0, -1.0, -1.0]]), np.ones(3, bool))
    rec = reconcile(model, np.array([101.0, 60.0, 40.0]), np.ones(3))
    np.testing.assert_allclose(rec.x_hat, [100.0 + 2 / 3, 60.0 + 1 / 3, 40.0 + 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(rec.adjustments, [-1 / 3, 1 / 3, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(np.diag(rec.cov), [2 / 3] * 3, rtol=1e-12)
    np.testing.assert_allclose(rec.cov[0, 1], 1 / 3, rtol=1e-12)  # F and P1 err the same way
    np.testing.assert_allclose(rec.z, [math.sqrt(1 / 3)] * 3, rtol=1e-12)
    np.testing.assert_allclose(rec.test1, [-1 / 3 / 1.96, 1 / 3 / 1.96, 1 / 3 / 1.96], rtol=1e-3)
    assert rec.gamma == pytest.approx(1 / 3)
    assert rec.dof == 1
    assert rec.p_value == pytest.approx(0.5637, abs=1e-4)  # chi2(1) sf at 1/3
    assert rec.passed
    assert rec.suspects == ()


def test_unequal_sigmas_move_the_least_trusted_stream() -> None:
    # Feed 1 % of 10 t (0.1 t), BM bag scale 0.1 % of 4.5 t: almost the whole 0.2 t imbalance
    # lands on the feed: V_F / (V_F + V_BM + V_R) = 0.01 / (0.01 + 0.0000203 + 0.0025).
    model = BalanceModel(["F", "BM", "R"], np.array([[1.0, -1.0, -1.0]]), np.ones(3, bool))
    sigma = np.array([0.1, 0.0045, 0.05])
    rec = reconcile(model, np.array([10.2, 4.5, 5.5]), sigma)
    s = float(np.sum(sigma**2))
    np.testing.assert_allclose(rec.adjustments, [-0.2 * 0.01 / s, 0.2 * 0.0045**2 / s, 0.2 * 0.0025 / s])


def test_unmeasured_loss_is_back_calculated_with_its_covariance() -> None:
    # One node F = BM + C + G with G unmeasured: no redundancy (dof 0), so the measurements stay
    # and G = F - BM - C carries all their variances.
    model = BalanceModel(
        ["F", "BM", "C", "G"], np.array([[1.0, -1.0, -1.0, -1.0]]), np.array([True, True, True, False])
    )
    rec = reconcile(model, np.array([10.0, 4.5, 1.0, 0.0]), np.array([0.1, 0.0045, 0.01, 1.0]))
    assert rec.dof == 0
    assert rec.passed
    assert rec.observable.all()
    np.testing.assert_allclose(rec.x_hat, [10.0, 4.5, 1.0, 4.5])
    assert rec.cov[3, 3] == pytest.approx(0.01 + 0.0045**2 + 0.0001)
    assert rec.cov[3, 0] == pytest.approx(0.01)
    assert rec.cov[3, 1] == pytest.approx(-(0.0045**2))
    assert math.isnan(rec.adjustments[3])
    assert math.isnan(rec.z[3])


def line_three_nodes(measured: dict[str, bool]) -> BalanceModel:
    """Shredder F -> S; dryer S -> D + C + G1; separation D -> BM + AC + FE + PL + DU + G2."""
    streams = ["F", "S", "D", "C", "G1", "BM", "AC", "FE", "PL", "DU", "G2"]
    a = np.zeros((3, len(streams)))
    for node, ins, outs in [
        (0, ["F"], ["S"]),
        (1, ["S"], ["D", "C", "G1"]),
        (2, ["D"], ["BM", "AC", "FE", "PL", "DU", "G2"]),
    ]:
        for s in ins:
            a[node, streams.index(s)] = 1.0
        for s in outs:
            a[node, streams.index(s)] = -1.0
    return BalanceModel(streams, a, np.array([measured.get(s, True) for s in streams]))


def test_observability_of_unmeasured_streams() -> None:
    # S follows from the shredder node alone; D, G1 and G2 share two equations: only their
    # combinations are known, so none of them gets a value.
    model = line_three_nodes({"S": False, "D": False, "G1": False, "G2": False})
    y = np.array([10.0, 0, 0, 1.0, 0, 4.5, 1.5, 2.0, 0.6, 0.3, 0])
    rec = reconcile(model, y, np.maximum(0.01 * y, 0.01))
    unobservable = {s for s, ok in zip(rec.streams, rec.observable, strict=True) if not ok}
    assert unobservable == {"D", "G1", "G2"}
    assert rec.value("S") == pytest.approx(10.0)
    assert math.isnan(rec.value("D"))
    assert np.isnan(rec.cov[rec.streams.index("G1")]).all()


def test_yield_uncertainty_figures_from_domain_notes() -> None:
    # domain.md: class-1 feed (1 %) and 0.1 % bags give sigma_Y ~ 1.0 % relative, +-0.9 pp
    # (2 sigma) at Y = 45 %: sqrt(1^2 + 0.1^2) % = 1.005 %, x 45 % = 0.452 pp, x 2 = 0.905 pp.
    feed, bm = 13.6, 0.45 * 13.6
    for feed_rel, two_sigma_pp in [(0.01, 0.905), (0.005, 0.459)]:
        cov = np.diag([(feed_rel * feed) ** 2, (0.001 * bm) ** 2])
        y, s = ratio_with_uncertainty(np.array([feed, bm]), cov, num=1, den=0)
        assert y == pytest.approx(0.45)
        assert 200 * s == pytest.approx(two_sigma_pp, abs=0.001)


def test_reconciling_the_overall_node_narrows_the_yield_band() -> None:
    # With the outputs weighed (bins 0.5 %, condensate 1 %) and G as a pseudo-measurement
    # (0.5 % of F +- 100 %), the balance is redundant and the feed borrows precision from the
    # outputs: the 2-sigma band must come out below the unreconciled 0.905 pp.
    streams = ["F", "C", "BM", "AC", "FE", "PL", "DU", "G"]
    f = 13.6
    y = np.array([f, 1.36, 0.45 * f, 2.0, 2.3, 0.68, 0.0, 0.0])
    y[-1] = 0.005 * f
    y[-2] = f - y[1:-2].sum() - y[-1]
    sigma = np.array([0.01 * f, 0.0136, 0.001 * 0.45 * f, 0.01, 0.0115, 0.0034, 0.005 * y[-2], y[-1]])
    model = BalanceModel(streams, -np.ones((1, 8)) + 2 * np.eye(1, 8), np.ones(8, bool))
    rec = reconcile(model, y, sigma)
    ratio, s = rec.ratio("BM", "F")
    assert ratio == pytest.approx(0.45)
    assert 0.3 < 200 * s < 0.905


# --- properties on random networks ---------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn) -> tuple[BalanceModel, np.ndarray, np.ndarray]:
    """A random flowsheet: each stream runs between two of the nodes or the environment."""
    n_nodes = draw(st.integers(1, 4))
    n_streams = draw(st.integers(2, 10))
    a = np.zeros((n_nodes, n_streams))
    for j in range(n_streams):
        src, dst = draw(
            st.lists(st.integers(-1, n_nodes - 1), min_size=2, max_size=2, unique=True).filter(
                lambda p: max(p) >= 0
            )
        )
        if src >= 0:
            a[src, j] = -1.0
        if dst >= 0:
            a[dst, j] = 1.0
    measured = np.array(draw(st.lists(st.booleans(), min_size=n_streams, max_size=n_streams)))
    measured[draw(st.integers(0, n_streams - 1))] = True
    y = np.array(draw(st.lists(st.floats(0.5, 1000.0), min_size=n_streams, max_size=n_streams)))
    rel = np.array(draw(st.lists(st.floats(0.001, 0.05), min_size=n_streams, max_size=n_streams)))
    model = BalanceModel([f"s{j}" for j in range(n_streams)], a, measured)
    return model, y, rel * y


def balance_residual(model: BalanceModel, rec: Reconciled) -> np.ndarray:
    """A x_hat, with unobservable streams (NaN) given any values that balance if any do."""
    x = rec.x_hat.copy()
    unknown = np.isnan(x)
    rhs = -model.a[:, ~unknown] @ x[~unknown]
    if unknown.any():
        x[unknown] = np.linalg.lstsq(model.a[:, unknown], rhs, rcond=None)[0]
    return model.a @ x


@given(networks())
@settings(max_examples=300, deadline=None)
def test_reconciled_totals_balance_every_node(net: tuple[BalanceModel, np.ndarray, np.ndarray]) -> None:
    model, y, sigma = net
    rec = reconcile(model, y, sigma)
    assert np.max(np.abs(balance_residual(model, rec))) <= 1e-9 * np.max(np.abs(y))


@given(networks())
@settings(max_examples=300, deadline=None)
def test_covariance_is_symmetric_psd_and_never_wider_than_the_measurement(
    net: tuple[BalanceModel, np.ndarray, np.ndarray],
) -> None:
    model, y, sigma = net
    rec = reconcile(model, y, sigma)
    obs = np.flatnonzero(rec.observable)
    cov = rec.cov[np.ix_(obs, obs)]
    assert np.isfinite(cov).all()
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-12 * np.max(sigma) ** 2)
    assert np.linalg.eigvalsh(cov).min() >= -1e-9 * np.max(sigma) ** 2
    meas = model.measured
    assert np.all(np.diag(rec.cov)[meas] <= sigma[meas] ** 2 * (1 + 1e-9))
    assert rec.gamma >= 0.0
    assert 0 <= rec.dof <= model.a.shape[0]


@given(networks())
@settings(max_examples=300, deadline=None)
def test_consistent_data_is_left_unchanged(net: tuple[BalanceModel, np.ndarray, np.ndarray]) -> None:
    model, y, _ = net
    # Project y onto the balanced subspace: A y = 0 exactly (up to round-off).
    null = np.linalg.svd(model.a)[2][np.linalg.matrix_rank(model.a) :].T
    y_ok = null @ (null.T @ y) if null.size else np.zeros_like(y)
    sigma_ok = 0.01 * (np.abs(y_ok) + np.max(y))
    rec = reconcile(model, y_ok, sigma_ok)
    scale = np.max(np.abs(y))
    np.testing.assert_allclose(rec.x_hat[model.measured], y_ok[model.measured], rtol=0, atol=1e-9 * scale)
    assert rec.gamma <= 1e-12
    assert rec.suspects == ()
    observable_unmeasured = rec.observable & ~model.measured
    np.testing.assert_allclose(
        rec.x_hat[observable_unmeasured], y_ok[observable_unmeasured], rtol=0, atol=1e-9 * scale
    )


@given(networks(), st.floats(1e-3, 1e3))
@settings(max_examples=200, deadline=None)
def test_scaling_y_and_sigma_together_scales_the_result(
    net: tuple[BalanceModel, np.ndarray, np.ndarray], k: float
) -> None:
    model, y, sigma = net
    base = reconcile(model, y, sigma)
    scaled = reconcile(model, k * y, k * sigma)
    np.testing.assert_allclose(scaled.x_hat, k * base.x_hat, rtol=1e-8, atol=1e-9 * k * np.max(y))
    np.testing.assert_allclose(scaled.z, base.z, rtol=1e-6, atol=1e-8)
    assert scaled.gamma == pytest.approx(base.gamma, rel=1e-6, abs=1e-10)
    assert scaled.dof == base.dof
    np.testing.assert_array_equal(scaled.observable, base.observable)
    np.testing.assert_array_equal(scaled.redundant, base.redundant)


# --- statistics and gross errors -----------------------------------------------------------------

LINE = line_three_nodes({"G1": False, "G2": False})
# A plant with a dryer and separation where the losses are lumped: S and D weighed too.
LINE_ALL_MEASURED = BalanceModel(
    ["F", "S", "D", "C", "BM", "AC", "FE", "PL", "DU"],
    np.array(
        [
            [1, -1, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, -1, -1, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, -1, -1, -1, -1, -1],
        ],
        float,
    ),
    np.ones(9, bool),
)
TRUE_TOTALS = np.array([10.0, 10.0, 9.0, 1.0, 4.5, 1.5, 2.0, 0.6, 0.4])
SIGMA = 0.01 * TRUE_TOTALS + 0.02


def test_global_statistic_of_pure_noise_is_chi_square() -> None:
    rng = np.random.default_rng(7)
    draws = 4000
    gammas = np.empty(draws)
    passed = 0
    for i in range(draws):
        rec = reconcile(LINE_ALL_MEASURED, TRUE_TOTALS + rng.normal(0.0, SIGMA), SIGMA)
        gammas[i] = rec.gamma
        passed += rec.passed
    assert rec.dof == 3
    # chi2(3): mean 3, variance 6, so the mean of 4000 has sd 0.039; 95 % pass, sd 0.34 %.
    assert gammas.mean() == pytest.approx(3.0, abs=0.2)
    assert gammas.var() == pytest.approx(6.0, rel=0.2)
    assert passed / draws == pytest.approx(0.95, abs=0.015)


@given(st.sampled_from(["F", "S", "D"]), st.sampled_from([-1.0, 1.0]), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_a_ten_sigma_error_on_a_redundant_stream_is_found_and_removed(
    stream: str, sign: float, seed: int
) -> None:
    j = LINE_ALL_MEASURED.index(stream)
    y = TRUE_TOTALS + np.random.default_rng(seed).normal(0.0, SIGMA)
    y[j] += sign * 10.0 * SIGMA[j]
    first = reconcile(LINE_ALL_MEASURED, y, SIGMA)
    assert not first.passed
    assert int(np.nanargmax(first.z)) == j
    assert stream in first.suspects
    result = reconcile_with_gross_error_elimination(LINE_ALL_MEASURED, y, SIGMA)
    assert result.removed[0] == stream
    # Back-calculated from the others, the removed stream comes back near its true total.
    assert result.final.value(stream) == pytest.approx(TRUE_TOTALS[j], abs=5 * SIGMA[j])


def test_two_gross_errors_are_removed_in_order() -> None:
    y = TRUE_TOTALS.copy()
    y[0] += 20 * SIGMA[0]
    y[2] -= 12 * SIGMA[2]
    result = reconcile_with_gross_error_elimination(LINE_ALL_MEASURED, y, SIGMA, max_removals=2)
    assert result.removed == ("F", "D")
    assert result.stop_reason == "passed"
    assert result.final.gamma == pytest.approx(0.0, abs=1e-12)
    assert result.final.value("F") == pytest.approx(10.0)
    assert not result.initial.passed


def test_max_removals_bounds_the_elimination() -> None:
    y = TRUE_TOTALS.copy()
    y[0] += 20 * SIGMA[0]
    y[2] -= 12 * SIGMA[2]
    result = reconcile_with_gross_error_elimination(LINE_ALL_MEASURED, y, SIGMA, max_removals=1)
    assert result.removed == ("F",)
    assert result.stop_reason == "max_removals"
    assert not result.final.passed


def test_streams_the_balance_cannot_tell_apart_are_not_guessed() -> None:
    # The separation outputs enter only their node's balance, each with the same sign: an error
    # on BM moves all their measurement statistics alike, so none of them may be removed.
    y = TRUE_TOTALS.copy()
    y[4] += 10 * SIGMA[4]
    result = reconcile_with_gross_error_elimination(LINE_ALL_MEASURED, y, SIGMA)
    assert result.stop_reason == "ambiguous"
    assert result.removed == ()
    assert {"BM", "AC", "FE", "PL", "DU"} <= set(result.initial.suspects)


def test_elimination_stops_when_nothing_redundant_would_remain() -> None:
    model = BalanceModel(["F", "P1", "P2"], np.array([[1.0, -1.0, -1.0]]), np.ones(3, bool))
    result = reconcile_with_gross_error_elimination(model, np.array([110.0, 60.0, 40.0]), np.ones(3))
    assert not result.final.passed
    assert result.stop_reason == "not_redundant"
    assert result.removed == ()


def test_suspects_follow_the_measurement_test_in_the_line_with_losses() -> None:
    # F and S are both weighed and the shredder node has no loss: a 10-sigma feed error shows.
    y = np.array([10.0, 10.0, 9.0, 1.0, 0.0, 4.5, 1.5, 2.0, 0.6, 0.4, 0.0])
    sigma = np.maximum(0.01 * y, 0.02)
    y[0] += 10 * sigma[0]
    rec = reconcile(LINE, y, sigma)
    assert rec.dof == 1  # only the shredder node is redundant once G1 and G2 are unknown
    assert set(rec.suspects) == {"F", "S"}
    assert not rec.redundant[LINE.index("BM")]
    assert rec.z[LINE.index("BM")] == 0.0


@given(
    st.floats(1.0, 1000.0),
    st.floats(0.1, 10.0),
    st.floats(0.001, 0.04),
    st.floats(0.001, 0.04),
    st.floats(-0.9, 0.9),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_delta_method_sigma_matches_monte_carlo(
    den: float, ratio: float, rel_n: float, rel_d: float, rho: float, seed: int
) -> None:
    num = ratio * den
    s_n, s_d = rel_n * num, rel_d * den
    cov = np.array([[s_n**2, rho * s_n * s_d], [rho * s_n * s_d, s_d**2]])
    y, sigma = ratio_with_uncertainty(np.array([num, den]), cov, num=0, den=1)
    assert y == pytest.approx(ratio)
    draws = np.random.default_rng(seed).multivariate_normal([num, den], cov, size=40_000)
    mc = np.std(draws[:, 0] / draws[:, 1])
    assert sigma == pytest.approx(mc, rel=0.10)


def test_model_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="streams"):
        BalanceModel(["F", "BM"], np.array([[1.0, -1.0, -1.0]]), np.ones(2, bool))
    with pytest.raises(ValueError, match="measured"):
        BalanceModel(["F", "BM"], np.array([[1.0, -1.0]]), np.zeros(2, bool))
    model = BalanceModel(["F", "BM"], np.array([[1.0, -1.0]]), np.ones(2, bool))
    with pytest.raises(ValueError, match="sigma"):
        reconcile(model, np.array([1.0, 1.0]), np.array([0.1, 0.0]))
