"""How a series gets its forecaster: seasonality detection and holdout selection.

``select_and_fit`` (run in a worker thread on a *copy* of the data) looks at the
series and lets a holdout decide:

1. the sampling step is the median spacing of the timestamps;
2. seasonality is detected from the autocorrelation at the candidate periods that the
   step implies (hourly, daily, weekly, in points): a period counts when its ACF is
   high *and* a peak (clearly above the ACF at half the period; a merely smooth series
   has a high ACF at every short lag);
3. candidates are fitted on the data before each of ``SELECTION_FOLDS`` (4) rolling
   holdout windows and scored by the mean absolute error of their multi-step forecast
   over the holdouts: naive (last value), drift, simple exponential smoothing, AR(p) on
   levels and on differences (ARIMA(p,0,0) / ARIMA(p,1,0), least squares, p by AIC; the
   integrated ones only when the levels' lag-1 ACF shows persistence), a robust level
   (median of the last season, ``robust.py``) and, when a period was found, seasonal
   naive, Holt-Winters (statsmodels, additive, optionally damped trend; only for periods
   up to ``HW_MAX_PERIOD`` points), a "seasonal profile + SES" model (a mean seasonal
   shape with a smoothed level; cheap for any period length) and its robust twin, a
   seasonal median (per-phase median of the last cycles). The medians are there for
   bursty series, where every mean-based model chases the bursts; the holdouts decide
   per series, on data before the forecast origin only;
4. the winner is refitted on all the data — or, when the equal-weight mean of the two
   best beats the best alone by ``COMBO_MARGIN`` on the holdout, both are (forecast
   combination is a cheap, well-known hedge against picking the wrong model).

``fallback_forecaster`` is the fit-free answer for a series never fitted yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from twin.models.statistical.forecasters import (
    AR,
    SES,
    Combo,
    Drift,
    Forecaster,
    HoltWinters,
    Naive,
    SeasonalNaive,
    SeasonalProfile,
)

__all__ = [
    "FitReport",
    "detect_seasonality",
    "fallback_forecaster",
    "sampling_step",
    "select_and_fit",
    "z_value",
]

HW_MAX_PERIOD = 400
CANDIDATE_PERIODS = (("hourly", 3600.0), ("daily", 86400.0), ("weekly", 604800.0))
MIN_ACF = 0.3
MIN_PEAK = 0.1
MIN_FIT_POINTS = 20
PERSISTENCE_ACF = 0.5  # lag-1 ACF of the levels below which d=1 models are not offered
COMBO_MARGIN = 0.97  # a combination must beat the best single model by 3 % on the holdout
# Holdout windows a candidate is scored on (rolling origin, each one horizon long): with
# two, one burst in the last horizons decided the choice on bursty series.
SELECTION_FOLDS = 4
ROBUST_WINDOW = 24  # points of the robust level's median when the series has no season


def z_value(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + min(0.999, max(0.5, level)) / 2.0)


def sampling_step(t: np.ndarray) -> float:
    if t.shape[0] < 2:
        return 60.0
    d = np.diff(t)
    d = d[d > 0]
    return float(np.median(d)) if d.shape[0] else 60.0


def _acf_at(y: np.ndarray, lag: int) -> float:
    if lag <= 0 or lag >= y.shape[0] - 2:
        return 0.0
    a, b = y[:-lag], y[lag:]
    sa, sb = float(a.std()), float(b.std())
    if sa == 0.0 or sb == 0.0:
        return 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def detect_seasonality(y: np.ndarray, step: float) -> tuple[int, str, float]:
    """(period in points, name, acf) of the strongest evident season, or (1, "none", 0)."""
    n = y.shape[0]
    if n < 8:
        return 1, "none", 0.0
    x = y - np.polyval(np.polyfit(np.arange(n, dtype=float), y, 1), np.arange(n, dtype=float))
    found: list[tuple[int, str, float]] = []
    for name, seconds in CANDIDATE_PERIODS:
        m = int(round(seconds / step)) if step > 0 else 0
        if m < 4 or 2 * m > n:
            continue
        r = _acf_at(x, m)
        half = _acf_at(x, max(1, m // 2))
        if r >= MIN_ACF and r - half >= MIN_PEAK:
            found.append((m, name, r))
    if not found:
        return 1, "none", 0.0
    best = max(r for _, _, r in found)
    return min((f for f in found if f[2] >= best - 0.1), key=lambda f: f[0])


@dataclass(slots=True)
class FitReport:
    kind: str
    description: str
    period: int
    season: str
    step: float
    n: int
    holdout: int
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    holdout_mae: float = math.nan  # the chosen forecaster's mean holdout error (drift reference)


def _candidates(
    m: int, n: int, persistent: bool = True
) -> list[tuple[str, Callable[[np.ndarray], Forecaster]]]:
    from twin.models.statistical.robust import RobustLevel, SeasonalMedian

    c: list[tuple[str, Callable[[np.ndarray], Forecaster]]] = [
        ("naive", Naive.fit),
        ("ses", SES.fit),
        ("arima_d0", lambda y: AR.fit(y, 0)),
        ("robust_level", lambda y: RobustLevel.fit(y, m if m > 1 else ROBUST_WINDOW)),
    ]
    if persistent:
        # Integrated models only for series that look integrated: on a series whose
        # levels barely autocorrelate they can only win a short holdout by luck.
        c.append(("drift", Drift.fit))
        c.append(("arima_d1", lambda y: AR.fit(y, 1)))
    if m > 1:
        c.append(("seasonal_naive", lambda y: SeasonalNaive.fit(y, m)))
        c.append(("seasonal_profile", lambda y: SeasonalProfile.fit(y, m)))
        c.append(("seasonal_median", lambda y: SeasonalMedian.fit(y, m)))
        if m <= HW_MAX_PERIOD:
            c.append(("holt_winters", lambda y: HoltWinters.fit(y, m, False)))
            c.append(("holt_winters_damped", lambda y: HoltWinters.fit(y, m, True)))
    return c


def _needs(name: str, m: int) -> int:
    if name == "seasonal_median":
        return 4 * m
    if name.startswith(("holt_winters", "seasonal")):
        return 2 * m + 2
    return MIN_FIT_POINTS


def select_and_fit(
    t: np.ndarray, y: np.ndarray, horizon: int = 60, folds: int = SELECTION_FOLDS
) -> tuple[Forecaster, FitReport]:
    """Detects seasonality, scores candidates on holdout windows, refits the winner."""
    import time

    t0 = time.perf_counter()
    y = np.asarray(y, dtype=float)
    n = y.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 points to fit, have {n}")
    step = sampling_step(t)
    m, season, _ = detect_seasonality(y, step)
    H = max(1, min(horizon, n // 5))
    scores: dict[str, float] = {}
    preds: dict[str, list[np.ndarray]] = {}
    tests: list[np.ndarray] = []
    persistent = _acf_at(y, 1) >= PERSISTENCE_ACF
    cands = _candidates(m, n, persistent)
    for name, build in cands:
        errs = []
        fold_preds = []
        for f in range(folds):
            end = n - (folds - 1 - f) * H
            train, test = y[: end - H], y[end - H : end]
            if len(tests) < folds:
                tests.append(test)
            if train.shape[0] < _needs(name, m):
                continue
            try:
                fc = build(train)
                pred = fc.mean(H)
            except Exception:  # noqa: BLE001 - a failing candidate just loses
                continue
            if np.all(np.isfinite(pred)):
                errs.append(float(np.mean(np.abs(pred - test))))
                fold_preds.append(pred)
        if errs and len(errs) == folds:
            scores[name] = float(np.mean(errs))
            preds[name] = fold_preds
    order = sorted(scores, key=lambda k: scores[k]) or ["naive"]
    builders = dict(cands)
    combo = None
    if len(order) >= 2:
        a, b = order[0], order[1]
        err = float(
            np.mean(
                [np.mean(np.abs((pa + pb) / 2 - t)) for pa, pb, t in zip(preds[a], preds[b], tests)]
            )
        )
        scores["combination"] = err
        if err < COMBO_MARGIN * scores[a]:
            combo = (a, b)
    last_exc: Exception | None = None
    if combo is not None:
        try:
            fc = Combo([builders[combo[0]](y), builders[combo[1]](y)])
            return fc, FitReport(
                fc.kind,
                fc.describe(),
                fc.period,
                season,
                step,
                n,
                H,
                scores,
                time.perf_counter() - t0,
                scores["combination"],
            )
        except Exception as exc:  # noqa: BLE001 - fall back to the single best
            last_exc = exc
    for name in order:
        build = builders[name]
        try:
            fc = build(y)
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
            continue
        return fc, FitReport(
            fc.kind,
            fc.describe(),
            fc.period,
            season,
            step,
            n,
            H,
            scores,
            time.perf_counter() - t0,
            scores.get(name, math.nan),
        )
    raise RuntimeError(f"every candidate failed to fit: {last_exc}")


def fallback_forecaster(t: np.ndarray, y: np.ndarray) -> tuple[Forecaster, str]:
    """Cheap, fit-free forecaster for the request path (wide intervals by design)."""
    step = sampling_step(t)
    m = int(round(86400.0 / step)) if step > 0 else 0
    if m >= 4 and y.shape[0] >= 2 * m:
        d = y[m:] - y[:-m]
        fc: Forecaster = SeasonalNaive(y[-m:], 2.0 * float(d.std()))
        return fc, f"seasonal naive (m={m}, one day)"
    if y.shape[0] >= 2:
        fc = Naive(float(y[-1]), 2.0 * float(np.diff(y).std()) or abs(float(y[-1])) * 0.1)
    else:
        fc = Naive(float(y[-1]), abs(float(y[-1])) * 0.2 + 1e-9)
    return fc, "last value"
