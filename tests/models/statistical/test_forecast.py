"""Forecasters: seasonality detection, state advance without refits, holdout selection
on real NAB series, interval coverage, and the engine's fallback/caching rules."""

from __future__ import annotations

import numpy as np
import pytest

from twin.core.store import SeriesStore
from twin.models.statistical.forecast import (
    AR,
    SES,
    ForecastEngine,
    HoltWinters,
    SeasonalProfile,
    detect_seasonality,
    sampling_step,
    select_and_fit,
)

from stat_support import nab_series


def test_seasonality_detected_from_the_sampling_interval_on_nab() -> None:
    t, y = nab_series("artificialNoAnomaly/art_daily_small_noise.csv")
    assert sampling_step(t) == 300.0
    m, name, acf = detect_seasonality(y, 300.0)
    assert (m, name) == (288, "daily") and acf > 0.8
    t, y = nab_series("artificialNoAnomaly/art_noisy.csv")
    assert detect_seasonality(y, sampling_step(t))[0] == 1
    # Hourly NAB data (ad exchange): the daily period is 24 points.
    t, y = nab_series("realAdExchange/exchange-2_cpm_results.csv")
    assert sampling_step(t) == 3600.0
    assert detect_seasonality(y, 3600.0)[:2] == (24, "daily")


@pytest.mark.parametrize("trend", [False, True])
def test_holt_winters_state_advance_equals_statsmodels(trend: bool) -> None:
    """Advancing the cached state through new points = statsmodels run with the same params."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    _, y = nab_series("artificialNoAnomaly/art_daily_small_noise.csv")
    y = y[:2400]
    hw = HoltWinters.fit(y[:2000], 288, trend)
    hw.advance(y[2000:])
    ref = ExponentialSmoothing(
        y,
        trend="add" if trend else None,
        damped_trend=trend,
        seasonal="add",
        seasonal_periods=288,
        initialization_method="heuristic",
    ).fit(
        smoothing_level=hw.alpha,
        smoothing_trend=hw.beta if trend else None,
        smoothing_seasonal=hw.gamma,
        damping_trend=hw.phi if trend else None,
        optimized=False,
    )
    np.testing.assert_allclose(hw.mean(60), ref.forecast(60), rtol=1e-9, atol=1e-9)


def test_ses_and_ar_advance_match_a_fit_on_the_longer_series() -> None:
    _, y = nab_series("realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv")
    ses = SES.fit(y[:3000])
    ses.advance(y[3000:3500])
    lev = ses.level
    ref = SES(ses.alpha, 0.0, 1.0)
    ref.level = SES.fit(y[:3000]).level
    ref.advance(y[3000:3500])
    assert lev == pytest.approx(ref.level)
    ar = AR.fit(y[:3000], 1)
    ar.advance(y[3000:3500])
    assert ar.hist[-1] == y[3499]
    assert np.all(np.isfinite(ar.mean(60))) and np.all(np.diff(ar.sd(60)) >= -1e-12)


def test_seasonal_profile_handles_long_periods_cheaply() -> None:
    n, m = 12_000, 3600
    rng = np.random.default_rng(3)
    y = 40 + 15 * np.sin(2 * np.pi * np.arange(n) / m) + rng.normal(0, 1, n)
    sp = SeasonalProfile.fit(y[:10_000], m)
    sp.advance(y[10_000:11_000])
    pred = sp.mean(1000)
    assert np.mean(np.abs(pred - y[11_000:12_000])) < 1.5


def test_selected_models_beat_seasonal_naive_on_nab() -> None:
    """Two rolling origins on six NAB series of different kinds: relative MAE < 1 overall."""
    files = [
        "artificialNoAnomaly/art_daily_small_noise.csv",
        "artificialWithAnomaly/art_daily_nojump.csv",
        "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
        "realAWSCloudwatch/elb_request_count_8c0756.csv",
        "realAdExchange/exchange-4_cpm_results.csv",
    ]
    H = 60
    rel = []
    for f in files:
        t, y = nab_series(f)
        m = int(round(86400 / sampling_step(t)))
        errs, bench = [], []
        for cut in (int(0.7 * len(y)), len(y) - H):  # the backtest's first and last origins
            lo = max(0, cut - 4000)
            fc, report = select_and_fit(t[lo:cut], y[lo:cut], H)
            assert report.scores and report.kind == fc.kind
            actual = y[cut : cut + H]
            errs.append(np.mean(np.abs(fc.mean(H) - actual)))
            bench.append(np.mean(np.abs(y[lo:cut][-m:][np.arange(H) % m] - actual)))
        rel.append(np.mean(errs) / np.mean(bench))
    assert float(np.exp(np.mean(np.log(rel)))) < 0.9
    assert sum(r < 1 for r in rel) >= 4


def test_prediction_intervals_cover_about_their_level() -> None:
    """One fit, then the cached state is advanced origin after origin (as the twin does)."""
    t, y = nab_series("artificialNoAnomaly/art_daily_small_noise.csv")
    fc, _ = select_and_fit(t[:2500], y[:2500], 60)
    inside = total = 0
    prev = 2500
    for cut in range(2500, 4000, 150):
        fc.advance(y[prev:cut])
        prev = cut
        mean, sd = fc.mean(30), fc.sd(30)
        actual = y[cut : cut + 30]
        inside += int(np.sum(np.abs(actual - mean) <= 1.96 * sd))
        total += 30
    assert 0.8 <= inside / total <= 1.0


def test_engine_uses_a_fallback_until_fitted_then_the_cached_model() -> None:
    t, y = nab_series("artificialNoAnomaly/art_daily_small_noise.csv")
    store = SeriesStore()
    s = store.series("nab", "value")
    for a, b in zip(t[:3000].tolist(), y[:3000].tolist()):
        s.append(a, b)
    eng = ForecastEngine()
    key = ("nab", "value")
    out = eng.forecast(key, s, 3600.0)
    assert not out.fitted and "fallback" in out.method and key in eng.wanted
    assert out.times.shape[0] == 12 and out.times[0] == pytest.approx(t[2999] + 300)
    assert eng.due(key, s) == "never fitted"
    tt, vv, appended = eng.snapshot(s)
    fc, rep = select_and_fit(tt, vv)
    eng.install(key, fc, rep, appended, float(tt[-1]), s)
    assert eng.due(key, s) is None and key not in eng.wanted
    fitted = eng.forecast(key, s, 3600.0)
    assert fitted.fitted and fitted.method == rep.description
    # The fallback's intervals are wider than the fitted model's.
    assert np.mean(out.upper - out.lower) > np.mean(fitted.upper - fitted.lower)
    # New points advance the cached state (no refit) and move the forecast origin.
    for a, b in zip(t[3000:3010].tolist(), y[3000:3010].tolist()):
        s.append(a, b)
    moved = eng.forecast(key, s, 3600.0)
    assert moved.times[0] == pytest.approx(t[3009] + 300)
    assert eng.entries[key].fits == 1 and eng.entries[key].seen == s.appended


def test_engine_flags_drift_for_a_refit() -> None:
    store = SeriesStore()
    s = store.series("x", "m")
    rng = np.random.default_rng(0)
    for i in range(500):
        s.append(float(i), float(10 + rng.normal()))
    eng = ForecastEngine({"refit_every_points": 100_000})
    key = ("x", "m")
    tt, vv, ap = eng.snapshot(s)
    fc, rep = select_and_fit(tt, vv)
    eng.install(key, fc, rep, ap, float(tt[-1]), s)
    for i in range(500, 560):  # a level shift the model has not seen
        s.append(float(i), float(40 + rng.normal()))
        eng.catch_up(key, s)
    assert eng.due(key, s, ).startswith("drift")  # type: ignore[union-attr]
