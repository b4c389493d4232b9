"""``ForecastEngine``: the statistical model's cached forecasters, one per series.

The engine holds one entry per series: the fitted forecaster (``forecasters``, chosen
by ``selection``), how far it has been advanced, refit bookkeeping (event-time age,
points since fit, an exponentially weighted mean |z| of the one-step errors as the
drift signal) and failures. It never fits on the request path: a never-fitted series
is answered by a cheap fallback (last value, or seasonal naive when a daily period is
evident) with deliberately wide intervals, and is queued for the background fitter.

The forecasters and the selection are re-exported here, so ``forecast`` stays the one
import for code that forecasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.models.settings import parse_settings
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
from twin.models.statistical.selection import (
    FitReport,
    detect_seasonality,
    fallback_forecaster,
    sampling_step,
    select_and_fit,
    z_value,
)
from twin.models.statistical.settings import StatisticalSettings

__all__ = [
    "AR",
    "SES",
    "Combo",
    "Drift",
    "Entry",
    "FitReport",
    "ForecastEngine",
    "ForecastOut",
    "Forecaster",
    "HoltWinters",
    "Naive",
    "SeasonalNaive",
    "SeasonalProfile",
    "detect_seasonality",
    "fallback_forecaster",
    "sampling_step",
    "select_and_fit",
    "z_value",
]

FALLBACK_TAIL = 20_000  # points the request-path fallback may look at (2 days at 10 s)


@dataclass(slots=True)
class Entry:
    forecaster: Forecaster | None = None
    report: FitReport | None = None
    seen: int = 0  # series.appended already fed to the forecaster
    last_t: float = -math.inf  # newest time fed
    fit_t: float = -math.inf  # newest time in the fit data
    fit_points: int = 0  # series.appended when the fit data was copied
    fits: int = 0
    refits: int = 0
    failures: int = 0
    last_error: str = ""
    drift: float = 0.0  # EW mean |z| of one-step errors since the fit
    drift_n: int = 0
    fitting: bool = False


@dataclass(slots=True)
class ForecastOut:
    times: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    step: float
    fitted: bool
    method: str
    truncated: bool = False


class ForecastEngine:
    """Cached forecasters per (source, metric), advanced incrementally, refitted off-path."""

    def __init__(self, settings: StatisticalSettings | Mapping[str, Any] | None = None) -> None:
        s = (
            settings
            if isinstance(settings, StatisticalSettings)
            else parse_settings(StatisticalSettings, settings)
        )
        self.min_points = s.min_fit_points
        self.max_fit_points = s.max_fit_points
        self.refit_points = s.refit_every_points
        self.refit_age = s.refit_interval_sec  # event time
        self.drift_threshold = s.drift_threshold
        self.selection_horizon = s.selection_horizon_steps
        self.max_steps = s.max_forecast_steps
        self.entries: dict[tuple[str, str], Entry] = {}
        self.wanted: set[tuple[str, str]] = set()  # requested but never fitted: fit first
        self.refit_requested: set[tuple[str, str]] = set()  # the ledger saw drift: refit soon
        self.fit_seconds_total = 0.0

    # -- bookkeeping on the loop thread -------------------------------------------

    def entry(self, key: tuple[str, str]) -> Entry:
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = Entry()
        return e

    def catch_up(self, key: tuple[str, str], series: Any) -> Entry:
        """Feeds points appended since the last call to the fitted forecaster (O(new))."""
        e = self.entry(key)
        fc = e.forecaster
        new = series.appended - e.seen
        if fc is None or new <= 0 or not len(series):
            return e
        t, v = series.tail(min(new, len(series)))
        keep = t > e.last_t
        t, v = t[keep], v[keep]
        e.seen = series.appended
        if not t.shape[0]:
            return e
        # Drift signal: one-step errors of the state's forecasts (sampled, bounded work).
        sd1 = max(fc.sigma, 1e-12)
        if t.shape[0] <= 64:
            for x in v.tolist():
                z = abs(x - float(fc.mean(1)[0])) / sd1
                e.drift += (min(z, 10.0) - e.drift) * (0.05 if e.drift_n else 1.0)
                e.drift_n += 1
                fc.advance(np.array([x]))
        else:
            pred = fc.mean(min(t.shape[0], 64))
            z = np.abs(v[: pred.shape[0]] - pred) / (sd1 * np.sqrt(fc.var_mult(pred.shape[0])))
            e.drift += (float(np.minimum(z, 10.0).mean()) - e.drift) * (0.5 if e.drift_n else 1.0)
            e.drift_n += t.shape[0]
            fc.advance(v)
        e.last_t = float(t[-1])
        return e

    def due(self, key: tuple[str, str], series: Any) -> str | None:
        """Why this series needs a (re)fit now, or None."""
        e = self.entries.get(key)
        if len(series) < self.min_points:
            return None
        if e is None or e.forecaster is None:
            if e is not None and e.fitting:
                return None
            if (
                e is not None
                and e.failures
                and series.appended - e.fit_points
                < min(self.refit_points, max(self.min_points, e.fit_points))
            ):
                return None  # failed on this data; retry once it has (up to) doubled
            return "never fitted"
        if e.fitting:
            return None
        if key in self.refit_requested:
            return "prediction drift (ledger)"
        if e.last_error and series.appended - e.fit_points < min(
            self.refit_points, max(self.min_points, e.fit_points)
        ):
            return None  # the last refit failed: keep the old model, retry later
        if series.appended - e.fit_points >= self.refit_points:
            return "new points"
        if self.refit_age and series.last_t - e.fit_t >= self.refit_age:
            return "age"
        if e.drift_n >= 20 and e.drift >= self.drift_threshold:
            return f"drift (mean |z| {e.drift:.2f})"
        return None

    def snapshot(self, series: Any) -> tuple[np.ndarray, np.ndarray, int]:
        t, v = series.tail(self.max_fit_points)
        return t, v, series.appended

    def install(
        self,
        key: tuple[str, str],
        fc: Forecaster,
        report: FitReport,
        appended: int,
        fit_t: float,
        series: Any,
    ) -> None:
        e = self.entry(key)
        if e.forecaster is not None:
            e.refits += 1
        e.forecaster, e.report = fc, report
        e.fits += 1
        e.seen = appended
        e.fit_points = appended
        e.fit_t = e.last_t = fit_t
        e.drift, e.drift_n = 0.0, 0
        e.last_error = ""
        e.fitting = False
        self.fit_seconds_total += report.seconds
        self.wanted.discard(key)
        self.refit_requested.discard(key)
        self.catch_up(key, series)

    def failed(self, key: tuple[str, str], exc: BaseException, appended: int) -> None:
        e = self.entry(key)
        e.failures += 1
        e.fitting = False
        self.refit_requested.discard(key)
        e.fit_points = appended
        e.last_error = f"{exc.__class__.__name__}: {exc}"

    # -- forecasts ---------------------------------------------------------------

    def forecast(
        self, key: tuple[str, str], series: Any, horizon_sec: float, level: float = 0.95
    ) -> ForecastOut:
        """Forecast from the cached state (no fitting); fallback when never fitted."""
        e = self.catch_up(key, series)
        fc = e.forecaster
        fitted = fc is not None
        if fc is None:
            self.wanted.add(key)
            t, v = series.tail(min(len(series), FALLBACK_TAIL))
            fc, method = fallback_forecaster(t, v)
            step = sampling_step(t)
            method = f"fallback: {method} (not fitted yet)"
        else:
            step = e.report.step if e.report else 60.0
            method = e.report.description if e.report else fc.describe()
        steps = max(1, int(math.floor(horizon_sec / step + 1e-9))) if step > 0 else 1
        truncated = steps > self.max_steps
        steps = min(steps, self.max_steps)
        mean = fc.mean(steps)
        half = z_value(level) * fc.sd(steps)
        times = series.last_t + step * np.arange(1, steps + 1)
        return ForecastOut(times, mean, mean - half, mean + half, step, fitted, method, truncated)

    def request_refit(self, system: str) -> int:
        """Marks every fitted series of ``system`` for a refit on the next cycle."""
        keys = [k for k, e in self.entries.items() if k[0] == system and e.forecaster is not None]
        self.refit_requested.update(keys)
        return len(keys)

    def backtest_error(self, key: tuple[str, str]) -> tuple[float, float] | None:
        """(holdout MAE of the fitted forecaster, holdout horizon in seconds), or None."""
        e = self.entries.get(key)
        r = e.report if e is not None and e.forecaster is not None else None
        if r is None or not math.isfinite(r.holdout_mae) or r.holdout_mae <= 0:
            return None
        return r.holdout_mae, r.holdout * r.step

    def reset(self) -> None:
        self.entries.clear()
        self.wanted.clear()
        self.refit_requested.clear()

    @property
    def fitted_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.forecaster is not None)
