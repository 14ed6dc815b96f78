"""Mass-balance data reconciliation by weighted least squares, with gross-error tests.

Window totals of the balance streams are adjusted, as little as their uncertainties allow, so
that every node balances exactly (Bilmat / JKMBal / Sigmafine style; domain.md section 3).
Unmeasured streams are first eliminated by Crowe's projection, the measured ones reconciled
against the projected constraints, and the unmeasured ones then back-calculated where the
network makes them observable. The result carries the statistics used to find gross errors:
the global chi-square test, the Mah-Tamhane measurement test and Sigmafine's Test1.
`reconcile_with_gross_error_elimination` removes the worst measurement serially.

Also here, because nothing else needs them and scipy is not a dependency: the chi-square
distribution (via the regularized incomplete gamma function) and the delta-method ratio
uncertainty used to publish yield as Y +- 2 sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Relative tolerance on singular values: below it a direction counts as absent (rank decisions).
_RANK_RTOL = 1e-10
# Two measurement-test statistics this close cannot tell their streams apart.
_TIE_RTOL = 1e-6
Z_CRITICAL_95 = 1.959963984540054
GLOBAL_TEST_ALPHA = 0.05


# --- chi-square distribution -------------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its series; converges fast for x < a + 1."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction; for x >= a + 1."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def regularized_gamma_p(a: float, x: float) -> float:
    """P(a, x) = gamma(a, x) / Gamma(a), the regularized lower incomplete gamma function."""
    if a <= 0.0:
        raise ValueError(f"a must be positive, got {a}")
    if x <= 0.0:
        return 0.0
    if x < a + 1.0:
        return _gamma_series(a, x)
    return 1.0 - _gamma_continued_fraction(a, x)


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = 1 - P(a, x), computed directly in the tail so small p-values keep their digits."""
    if a <= 0.0:
        raise ValueError(f"a must be positive, got {a}")
    if x <= 0.0:
        return 1.0
    if x < a + 1.0:
        return 1.0 - _gamma_series(a, x)
    return _gamma_continued_fraction(a, x)


def chi2_cdf(x: float, dof: int) -> float:
    """P(X <= x) for X ~ chi-square with `dof` degrees of freedom."""
    return regularized_gamma_p(0.5 * dof, 0.5 * x)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square with `dof` degrees of freedom: the p-value of a global test."""
    return regularized_gamma_q(0.5 * dof, 0.5 * x)


def chi2_quantile(p: float, dof: int) -> float:
    """The x with chi2_cdf(x, dof) = p, by bisection (monotone, so it cannot fail to converge)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    lo, hi = 0.0, float(dof) + 10.0
    while chi2_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if chi2_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


# --- the balance model and its reconciliation ---------------------------------------------------


@dataclass(frozen=True, eq=False)
class BalanceModel:
    """Streams, node constraints A x = 0 (one row per node, +1 in, -1 out) and which are measured."""

    streams: tuple[str, ...]
    a: np.ndarray
    measured: np.ndarray

    def __post_init__(self) -> None:
        a = np.atleast_2d(np.asarray(self.a, dtype=float))
        measured = np.asarray(self.measured, dtype=bool)
        streams = tuple(self.streams)
        if a.shape[1] != len(streams) or measured.shape != (len(streams),):
            raise ValueError(
                f"{len(streams)} streams but A has {a.shape[1]} columns and measured {measured.shape}"
            )
        if len(set(streams)) != len(streams):
            raise ValueError("stream names must be unique")
        if not measured.any():
            raise ValueError("at least one stream must be measured")
        # Frozen: normalise the caller's lists/arrays once, on construction.
        object.__setattr__(self, "streams", streams)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "measured", measured)

    def index(self, stream: str) -> int:
        return self.streams.index(stream)

    def without_measurement(self, stream: str) -> BalanceModel:
        """The same network with `stream` treated as unmeasured (a removed gross error)."""
        measured = self.measured.copy()
        measured[self.index(stream)] = False
        return BalanceModel(self.streams, self.a, measured)


@dataclass(frozen=True, eq=False)
class Reconciled:
    """Reconciled window totals and their statistics; arrays are indexed like `streams`.

    Unmeasured streams have NaN adjustment/z/test1; unobservable ones also NaN in x_hat and cov.
    A measured stream that is not redundant (no constraint checks it) keeps its value, with z = 0.
    """

    streams: tuple[str, ...]
    x_hat: np.ndarray
    cov: np.ndarray
    adjustments: np.ndarray
    z: np.ndarray
    test1: np.ndarray
    measured: np.ndarray
    redundant: np.ndarray
    observable: np.ndarray
    gamma: float
    dof: int
    p_value: float
    passed: bool
    suspects: tuple[str, ...]

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    def value(self, stream: str) -> float:
        return float(self.x_hat[self.streams.index(stream)])

    def ratio(self, num: str, den: str) -> tuple[float, float]:
        """num/den of reconciled totals with its 1-sigma (e.g. yield = ratio("BM", "F"))."""
        return ratio_with_uncertainty(self.x_hat, self.cov, self.streams.index(num), self.streams.index(den))


def _null_space_of_columns(m: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(P, N, rank): rows of P span the left null space (P m = 0); columns of N the right one."""
    rows, cols = m.shape
    if cols == 0:
        return np.eye(rows), np.zeros((0, 0)), 0
    u, s, vt = np.linalg.svd(m, full_matrices=True)
    rank = int(np.sum(s > _RANK_RTOL * max(scale, 1.0)))
    return u[:, rank:].T, vt[rank:].T, rank


def reconcile(model: BalanceModel, y: np.ndarray, sigma: np.ndarray) -> Reconciled:
    """Weighted least-squares reconciliation of the measured window totals `y` (1-sigma `sigma`).

    Entries of y and sigma for unmeasured streams are ignored. Uses Crowe's projection: P with
    P A_u = 0 removes the unmeasured streams, the measured ones are reconciled against
    B = P A_m (reduced to independent rows), and unmeasured ones solve A_u x_u = -A_m x_hat_m.
    """
    y = np.asarray(y, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    n = len(model.streams)
    if y.shape != (n,) or sigma.shape != (n,):
        raise ValueError(f"y and sigma must have shape ({n},), got {y.shape} and {sigma.shape}")
    meas = np.flatnonzero(model.measured)
    unmeas = np.flatnonzero(~model.measured)
    ym = y[meas]
    sm = sigma[meas]
    if not (np.all(np.isfinite(ym)) and np.all(np.isfinite(sm)) and np.all(sm > 0.0)):
        raise ValueError("measured streams need finite values and positive finite sigma")

    a = model.a
    a_m = a[:, meas]
    a_u = a[:, unmeas]
    a_scale = float(np.max(np.abs(a))) if a.size else 1.0
    p, null_u, _ = _null_space_of_columns(a_u, a_scale)

    # The projected constraints can repeat one another (e.g. a node balance that is the sum of
    # others); keep an independent set so A V A^T is invertible and the dof is its rank.
    b_full = p @ a_m
    if b_full.size:
        ub, sb, _ = np.linalg.svd(b_full, full_matrices=False)
        rank_b = int(np.sum(sb > _RANK_RTOL * a_scale))
        b = ub[:, :rank_b].T @ b_full
    else:
        rank_b = 0
        b = np.zeros((0, len(meas)))

    v = np.diag(sm**2)
    if rank_b > 0:
        r = b @ ym
        s = b @ v @ b.T
        s_inv_r = np.linalg.solve(s, r)
        gain = np.linalg.solve(s, b @ v).T  # V B^T S^-1 (S symmetric)
        x_m = ym - gain @ r
        w = gain @ b @ v
        w = 0.5 * (w + w.T)
        gamma = float(r @ s_inv_r)
        p_value = chi2_sf(gamma, rank_b)
    else:
        x_m = ym.copy()
        w = np.zeros_like(v)
        gamma = 0.0
        p_value = 1.0
    cov_m = v - w
    cov_m = 0.5 * (cov_m + cov_m.T)

    adj_m = x_m - ym
    w_diag = np.diag(w)
    redundant_m = w_diag > _RANK_RTOL * np.diag(v)
    z_m = np.zeros(len(meas))
    z_m[redundant_m] = np.abs(adj_m[redundant_m]) / np.sqrt(w_diag[redundant_m])

    # Back-calculate the unmeasured streams. An unmeasured stream is observable iff the null
    # space of A_u has no component along it: then every solution agrees on its value.
    observable_u = np.linalg.norm(null_u, axis=1) < 1e-8 if null_u.size else np.ones(len(unmeas), dtype=bool)
    lift = -np.linalg.pinv(a_u) @ a_m if len(unmeas) else np.zeros((0, len(meas)))
    x_u = lift @ x_m
    cov_u = lift @ cov_m @ lift.T
    cov_um = lift @ cov_m

    x_hat = np.empty(n)
    cov = np.empty((n, n))
    x_hat[meas] = x_m
    x_hat[unmeas] = x_u
    cov[np.ix_(meas, meas)] = cov_m
    cov[np.ix_(unmeas, unmeas)] = cov_u
    cov[np.ix_(unmeas, meas)] = cov_um
    cov[np.ix_(meas, unmeas)] = cov_um.T
    unobservable = unmeas[~observable_u]
    x_hat[unobservable] = np.nan
    cov[unobservable, :] = np.nan
    cov[:, unobservable] = np.nan

    adjustments = np.full(n, np.nan)
    z = np.full(n, np.nan)
    test1 = np.full(n, np.nan)
    adjustments[meas] = adj_m
    z[meas] = z_m
    test1[meas] = adj_m / (Z_CRITICAL_95 * sm)
    redundant = np.zeros(n, dtype=bool)
    redundant[meas] = redundant_m
    observable = np.ones(n, dtype=bool)
    observable[unobservable] = False
    suspects = tuple(model.streams[j] for j in meas if z[j] > Z_CRITICAL_95)
    return Reconciled(
        streams=model.streams,
        x_hat=x_hat,
        cov=cov,
        adjustments=adjustments,
        z=z,
        test1=test1,
        measured=model.measured.copy(),
        redundant=redundant,
        observable=observable,
        gamma=gamma,
        dof=rank_b,
        p_value=p_value,
        passed=p_value >= GLOBAL_TEST_ALPHA,
        suspects=suspects,
    )


@dataclass(frozen=True, eq=False)
class GrossErrorElimination:
    """Outcome of serial elimination: the final reconciliation and what was removed, in order.

    stop_reason: "passed" (global test passes), "max_removals", "not_redundant" (removing
    another measurement would leave nothing to test) or "ambiguous" (the worst measurement ties
    with another, so the data cannot say which one is wrong).
    """

    initial: Reconciled
    final: Reconciled
    removed: tuple[str, ...]
    stop_reason: str


def reconcile_with_gross_error_elimination(
    model: BalanceModel, y: np.ndarray, sigma: np.ndarray, max_removals: int = 2
) -> GrossErrorElimination:
    """Reconcile; while the global test fails, drop the measurement with the largest z and re-run."""
    initial = reconcile(model, y, sigma)
    result = initial
    removed: list[str] = []
    while True:
        if result.passed:
            reason = "passed"
            break
        if len(removed) >= max_removals:
            reason = "max_removals"
            break
        # Removing a redundant measurement costs one degree of freedom; at least one must stay
        # for the global test to say anything about the rest.
        if result.dof < 2:
            reason = "not_redundant"
            break
        z = np.where(result.redundant, result.z, -np.inf)
        worst = int(np.argmax(z))
        others = np.delete(z, worst)
        if others.size and np.max(others) >= z[worst] * (1.0 - _TIE_RTOL):
            reason = "ambiguous"
            break
        removed.append(model.streams[worst])
        model = model.without_measurement(model.streams[worst])
        result = reconcile(model, y, sigma)
    return GrossErrorElimination(initial=initial, final=result, removed=tuple(removed), stop_reason=reason)


def ratio_with_uncertainty(x_hat: np.ndarray, cov: np.ndarray, num: int, den: int) -> tuple[float, float]:
    """(Y, sigma_Y) for Y = x[num] / x[den] by the delta method (first order in the errors).

    (sigma_Y / Y)^2 = s_n^2/n^2 + s_d^2/d^2 - 2 cov_nd/(n d); a positive covariance, as
    reconciliation creates between streams of one node, narrows the ratio.
    """
    n = float(x_hat[num])
    d = float(x_hat[den])
    ratio = n / d
    rel_var = cov[num, num] / n**2 + cov[den, den] / d**2 - 2.0 * cov[num, den] / (n * d)
    return ratio, abs(ratio) * math.sqrt(max(float(rel_var), 0.0))
