"""Transport-delay estimation by cross-correlation on synthetic feed and black-mass rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delay_estimator import DelayEstimate, DelayTracker, estimate_delay, lagged_correlation

BIN_S = 10.0
MIN_LAG_S = 600.0
MAX_LAG_S = 5400.0


def synthetic_rates(
    seed: int,
    tau_s: float,
    hours: float = 6.0,
    noise: float = 0.03,
    noise_per_bin: bool = False,
    yield_drift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Feed and BM rates (t/h) on a 10 s grid, BM = Y * feed(t - tau), built on a 1 s grid.

    Feed: piecewise-constant levels changing every 15-45 min by up to +-30 %, times a random
    walk; BM is its delayed copy times the yield (optionally drifting, as with lot changes).
    Noise is 3 % of reading on each 1 s sample (the belt weighers' figure), averaged into the
    bins, or with `noise_per_bin` 3 % on each bin: three times harsher.
    """
    rng = np.random.default_rng(seed)
    n_s = int(hours * 3600)
    level = np.empty(n_s)
    current, i = 1.7, 0
    while i < n_s:
        duration = int(rng.uniform(900, 2700))
        level[i : i + duration] = current
        i += duration
        current = float(np.clip(current * (1 + rng.uniform(-0.3, 0.3)), 1.0, 2.4))
    walk = np.cumsum(rng.normal(0.0, 0.002, n_s))
    feed = level * (1 + walk - walk.mean())
    pad = math.ceil(tau_s) + 1
    history = np.concatenate([np.full(pad, feed[0]), feed])
    delayed = np.interp(np.arange(n_s) + pad - tau_s, np.arange(history.size), history)
    bm = (0.45 + yield_drift * np.linspace(-0.5, 0.5, n_s)) * delayed
    n_bins = int(n_s / BIN_S)
    if noise_per_bin:
        feed_bins = feed.reshape(n_bins, -1).mean(axis=1) * (1 + rng.normal(0, noise, n_bins))
        bm_bins = bm.reshape(n_bins, -1).mean(axis=1) * (1 + rng.normal(0, noise, n_bins))
    else:
        feed_bins = (feed * (1 + rng.normal(0, noise, n_s))).reshape(n_bins, -1).mean(axis=1)
        bm_bins = (bm * (1 + rng.normal(0, noise, n_s))).reshape(n_bins, -1).mean(axis=1)
    return feed_bins, bm_bins


@pytest.mark.parametrize("tau_s", [2130.0, 2135.0, 2133.3, 2137.5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_known_delay_is_found_within_a_bin_and_refined_within_a_third(tau_s: float, seed: int) -> None:
    feed, bm = synthetic_rates(seed, tau_s)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert est.ok, est.reason
    assert est.peak_corr >= 0.3
    assert abs(est.grid_lag_s - tau_s) <= BIN_S
    assert abs(est.lag_s - tau_s) <= 0.3 * BIN_S


def test_parabolic_refinement_beats_the_grid_on_half_bin_delays() -> None:
    # At 2,135 s the true delay sits midway between grid lags 213 and 214: the grid peak is 0.5
    # bin off by construction and only the interpolation can bring it closer.
    grid_errors, refined_errors = [], []
    for seed in range(10, 20):
        feed, bm = synthetic_rates(seed, 2135.0)
        est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
        grid_errors.append(abs(est.grid_lag_s - 2135.0))
        refined_errors.append(abs(est.lag_s - 2135.0))
    assert min(grid_errors) == pytest.approx(5.0)
    assert max(refined_errors) <= 3.0
    assert np.mean(refined_errors) <= 0.4 * np.mean(grid_errors)


def test_unshared_yield_drift_does_not_move_the_peak() -> None:
    # Yield sliding 42 -> 48 % over the window (a lot change) must not pull the estimate.
    for seed in (4, 5, 6):
        feed, bm = synthetic_rates(seed, 2135.0, yield_drift=0.06)
        est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
        assert est.ok, est.reason
        assert abs(est.lag_s - 2135.0) <= 0.3 * BIN_S


@pytest.mark.parametrize("seed", [7, 8, 9, 10])
def test_harsh_per_bin_noise_still_lands_within_a_bin(seed: int) -> None:
    feed, bm = synthetic_rates(seed, 2133.3, noise_per_bin=True)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert abs(est.lag_s - 2133.3) <= BIN_S


def test_nan_gaps_are_tolerated() -> None:
    feed, bm = synthetic_rates(11, 2135.0)
    rng = np.random.default_rng(0)
    feed[rng.random(feed.size) < 0.05] = np.nan
    bm[rng.random(bm.size) < 0.05] = np.nan
    feed[600:780] = np.nan  # a 30 min comms loss on the feed weigher
    bm[1500:1530] = np.nan
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert est.ok, est.reason
    assert abs(est.lag_s - 2135.0) <= 0.3 * BIN_S
    assert est.n_pairs < feed.size - 213


def test_steady_line_gives_no_estimate() -> None:
    rng = np.random.default_rng(12)
    n = 2160
    feed = 1.7 * (1 + rng.normal(0, 0.03, n))
    bm = 0.45 * 1.7 * (1 + rng.normal(0, 0.03, n))
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert not est.ok
    assert "steady" in est.reason


def test_peak_outside_the_search_range_is_reported_as_edge() -> None:
    # The range stops 3.5 bins short of the delay: the correlation still climbs at its end.
    feed, bm = synthetic_rates(13, 2135.0)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, 2100.0)
    assert not est.ok
    assert "edge" in est.reason
    assert est.lag_s == pytest.approx(2100.0)
    assert est.peak_corr >= 0.3


def test_unrelated_series_are_too_weak() -> None:
    feed, _ = synthetic_rates(14, 2135.0)
    _, bm = synthetic_rates(15, 2135.0)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert not est.ok
    assert est.peak_corr < 0.3 or "edge" in est.reason


def test_series_shorter_than_the_search_range() -> None:
    feed, bm = synthetic_rates(16, 2135.0, hours=1.0)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert not est.ok
    assert "shorter" in est.reason


@st.composite
def gappy_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(8, 120))
    values = st.one_of(st.floats(-50, 50, allow_nan=False), st.just(np.nan))
    feed = np.array(draw(st.lists(values, min_size=n, max_size=n)))
    bm = np.array(draw(st.lists(values, min_size=n, max_size=n)))
    return feed, bm, draw(st.integers(0, n - 1))


@given(gappy_pairs())
@settings(max_examples=300, deadline=None)
def test_fft_correlation_equals_direct_per_lag_pearson(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    feed, bm, max_lag = case
    corr, pairs = lagged_correlation(feed, bm, max_lag)
    for k in range(max_lag + 1):
        f, b = feed[: feed.size - k], bm[k:]
        ok = np.isfinite(f) & np.isfinite(b)
        assert pairs[k] == ok.sum()
        f, b = f[ok], b[ok]
        # FFT round-off scales with the whole series; a lag whose pairs spread a thousand times
        # less than the series does is outside what the fast path promises.
        scale = max(np.nanmax(np.abs(feed), initial=0.0), np.nanmax(np.abs(bm), initial=0.0))
        if ok.sum() < 3 or min(np.ptp(f), np.ptp(b)) == 0.0:
            assert np.isnan(corr[k])
            continue
        if min(np.ptp(f), np.ptp(b)) < 1e-3 * scale:
            continue
        want = np.corrcoef(f, b)[0, 1]
        if np.isfinite(want):
            assert corr[k] == pytest.approx(want, abs=1e-6)


# --- tracker ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_estimate() -> DelayEstimate:
    feed, bm = synthetic_rates(21, 2135.0)
    est = estimate_delay(feed, bm, BIN_S, MIN_LAG_S, MAX_LAG_S)
    assert est.ok
    return est


@pytest.mark.parametrize(
    ("config_error", "flagged"), [(0.5, True), (-0.5, True), (0.1, False), (-0.1, False)]
)
def test_wrong_delay_flag(good_estimate: DelayEstimate, config_error: float, flagged: bool) -> None:
    tracker = DelayTracker(tau_cfg_s=2135.0 * (1 + config_error))
    status = tracker.update(good_estimate)
    assert status.wrong_delay is flagged
    assert status.tau_est_s == pytest.approx(2135.0, abs=3.0)


def test_tracker_smooths_with_a_median_and_ignores_bad_estimates() -> None:
    tracker = DelayTracker(tau_cfg_s=2000.0, keep=5)
    assert not tracker.status().wrong_delay
    assert math.isnan(tracker.status().tau_est_s)
    for lag in (2130.0, 2140.0, 4000.0, 2135.0):  # one wild but "ok" estimate
        tracker.update(DelayEstimate(lag, 0.8, 2000, True, "ok", lag))
    assert tracker.status().tau_est_s == pytest.approx(2137.5)
    bad = DelayEstimate(5000.0, 0.1, 2000, False, "peak correlation 0.10 below 0.3", 5000.0)
    status = tracker.update(bad)
    assert status.n_good == 4
    assert tracker.latest is bad
    assert tracker.latest_good is not None
    assert tracker.latest_good.lag_s == 2135.0
    # The median moves only once the wrong value is the majority of the last `keep`.
    for _ in range(3):
        tracker.update(DelayEstimate(3000.0, 0.8, 2000, True, "ok", 3000.0))
    assert tracker.status().tau_est_s == pytest.approx(3000.0)
    assert tracker.status().wrong_delay
