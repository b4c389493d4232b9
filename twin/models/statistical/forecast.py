"""Per-series forecasting for the statistical world model.

How a series gets its forecaster
--------------------------------
``select_and_fit`` (run in a worker thread on a *copy* of the data) looks at the
series and lets a holdout decide:

1. the sampling step is the median spacing of the timestamps;
2. seasonality is detected from the autocorrelation at the candidate periods that the
   step implies (hourly, daily, weekly, in points): a period counts when its ACF is
   high *and* a peak (clearly above the ACF at half the period; a merely smooth series
   has a high ACF at every short lag);
3. candidates are fitted on the data minus one or two holdout windows and scored by the
   mean absolute error of their multi-step forecast over the holdout: naive (last
   value), drift, simple exponential smoothing, AR(p) on levels and on differences
   (ARIMA(p,0,0) / ARIMA(p,1,0), least squares, p by AIC; the integrated ones only
   when the levels' lag-1 ACF shows persistence) and, when a period was found,
   seasonal naive, Holt-Winters (statsmodels, additive, optionally damped trend; only
   for periods up to ``HW_MAX_PERIOD`` points) and a "seasonal profile + SES" model
   (a mean seasonal shape with a smoothed level; cheap for any period length);
4. the winner is refitted on all the data — or, when the equal-weight mean of the two
   best beats the best alone by ``COMBO_MARGIN`` on the holdout, both are (forecast
   combination is a cheap, well-known hedge against picking the wrong model).

Every fitted forecaster keeps its *state* (level, trend, seasonal ring, last values)
and can ``advance`` through new observations with O(1) work per point, without
refitting; forecasts are closed-form (vectorised numpy) from that state, which is what
keeps a cached forecast in the tens of microseconds. Prediction intervals are
``mean ± z·sd_h`` with the model's own h-step variance (ETS/ARIMA formulas) from the
one-step residual standard deviation.

``ForecastEngine`` holds one entry per series: the fitted forecaster, how far it has
been advanced, refit bookkeeping (event-time age, points since fit, an exponentially
weighted mean |z| of the one-step errors as the drift signal) and failures. It never
fits on the request path: a never-fitted series is answered by a cheap fallback
(last value, or seasonal naive when a daily period is evident) with deliberately wide
intervals, and is queued for the background fitter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

HW_MAX_PERIOD = 400
HW_MAX_CYCLES = 7
CANDIDATE_PERIODS = (("hourly", 3600.0), ("daily", 86400.0), ("weekly", 604800.0))
MIN_ACF = 0.3
MIN_PEAK = 0.1
MIN_FIT_POINTS = 20
FALLBACK_TAIL = 20_000  # points the request-path fallback may look at (2 days at 10 s)
PERSISTENCE_ACF = 0.5  # lag-1 ACF of the levels below which d=1 models are not offered
COMBO_MARGIN = 0.97  # a combination must beat the best single model by 3 % on the holdout


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


# ---------------------------------------------------------------------------- models


class Forecaster:
    """A fitted model with its state; ``advance`` feeds new observations in order."""

    kind = "abstract"
    period = 1

    def __init__(self, sigma: float) -> None:
        self.sigma = max(float(sigma), 0.0)

    def advance(self, y: np.ndarray) -> None:
        raise NotImplementedError

    def mean(self, h: int) -> np.ndarray:
        raise NotImplementedError

    def var_mult(self, h: int) -> np.ndarray:
        """Multipliers k_j so that var(h=j) = sigma² · k_j, j = 1..h."""
        return np.arange(1, h + 1, dtype=float)

    def sd(self, h: int) -> np.ndarray:
        return self.sigma * np.sqrt(self.var_mult(h))

    def describe(self) -> str:
        return self.kind


class Naive(Forecaster):
    kind = "naive"

    def __init__(self, last: float, sigma: float) -> None:
        super().__init__(sigma)
        self.last = float(last)

    @classmethod
    def fit(cls, y: np.ndarray) -> Naive:
        d = np.diff(y)
        return cls(float(y[-1]), float(d.std()) if d.shape[0] > 1 else 0.0)

    def advance(self, y: np.ndarray) -> None:
        if y.shape[0]:
            self.last = float(y[-1])

    def mean(self, h: int) -> np.ndarray:
        return np.full(h, self.last)


class Drift(Naive):
    kind = "drift"

    def __init__(self, last: float, slope: float, n: int, sigma: float) -> None:
        super().__init__(last, sigma)
        self.slope = slope
        self.n = n

    @classmethod
    def fit(cls, y: np.ndarray) -> Drift:
        n = y.shape[0]
        slope = float(y[-1] - y[0]) / max(n - 1, 1)
        d = np.diff(y) - slope
        return cls(float(y[-1]), slope, n, float(d.std()) if d.shape[0] > 1 else 0.0)

    def mean(self, h: int) -> np.ndarray:
        return self.last + self.slope * np.arange(1, h + 1)

    def var_mult(self, h: int) -> np.ndarray:
        k = np.arange(1, h + 1, dtype=float)
        return k * (1.0 + k / max(self.n, 1))


def _ses_filter(y: np.ndarray, alpha: float, level0: float) -> tuple[np.ndarray, np.ndarray]:
    """Levels after each point and the one-step errors, vectorised with lfilter."""
    from scipy.signal import lfilter

    lev, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], y, zi=[(1.0 - alpha) * level0])
    prev = np.concatenate(([level0], lev[:-1]))
    return lev, y - prev


class SES(Forecaster):
    kind = "ses"

    def __init__(self, alpha: float, level: float, sigma: float) -> None:
        super().__init__(sigma)
        self.alpha = alpha
        self.level = level

    @classmethod
    def fit(cls, y: np.ndarray) -> SES:
        from scipy.optimize import minimize_scalar

        level0 = float(y[: min(10, y.shape[0])].mean())

        def sse(a: float) -> float:
            _, e = _ses_filter(y, a, level0)
            return float(np.dot(e, e))

        res = minimize_scalar(sse, bounds=(0.01, 1.0), method="bounded", options={"xatol": 1e-3})
        alpha = float(res.x)
        lev, e = _ses_filter(y, alpha, level0)
        return cls(alpha, float(lev[-1]), float(e[min(10, e.shape[0] - 1):].std()))

    def advance(self, y: np.ndarray) -> None:
        a, lev = self.alpha, self.level
        for v in y.tolist():
            lev += a * (v - lev)
        self.level = lev

    def mean(self, h: int) -> np.ndarray:
        return np.full(h, self.level)

    def var_mult(self, h: int) -> np.ndarray:
        return 1.0 + np.arange(h, dtype=float) * self.alpha**2

    def describe(self) -> str:
        return f"ses(alpha={self.alpha:.3f})"


class SeasonalNaive(Forecaster):
    kind = "seasonal_naive"

    def __init__(self, ring: np.ndarray, sigma: float) -> None:
        super().__init__(sigma)
        self.ring = ring.astype(float).copy()  # ring[pos] is the value one period before the next step
        self.period = ring.shape[0]
        self.pos = 0

    @classmethod
    def fit(cls, y: np.ndarray, m: int) -> SeasonalNaive:
        d = y[m:] - y[:-m]
        return cls(y[-m:], float(d.std()) if d.shape[0] > 1 else 0.0)

    def advance(self, y: np.ndarray) -> None:
        m = self.period
        for v in y.tolist():
            self.ring[self.pos] = v
            self.pos = (self.pos + 1) % m

    def mean(self, h: int) -> np.ndarray:
        idx = (self.pos + np.arange(h)) % self.period
        return self.ring[idx]

    def var_mult(self, h: int) -> np.ndarray:
        return np.floor(np.arange(h) / self.period) + 1.0

    def describe(self) -> str:
        return f"seasonal_naive(m={self.period})"


class HoltWinters(Forecaster):
    """Additive Holt-Winters with optional damped trend; state advanced without refits.

    The recursion is the one statsmodels fits (``ExponentialSmoothing``), so the
    statsmodels estimates and final states carry over exactly.
    """

    kind = "holt_winters"

    def __init__(self, alpha: float, beta: float, gamma: float, phi: float, level: float, trend: float, season: np.ndarray, sigma: float, has_trend: bool) -> None:
        super().__init__(sigma)
        self.alpha, self.beta, self.gamma, self.phi = alpha, beta, gamma, phi
        self.level, self.trend = level, trend
        self.ring = season.astype(float).copy()
        self.period = season.shape[0]
        self.pos = 0
        self.has_trend = has_trend
        self._vm: np.ndarray | None = None

    @classmethod
    def fit(cls, y: np.ndarray, m: int, trend: bool) -> HoltWinters:
        import warnings

        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        y = y[-max(HW_MAX_CYCLES * m, 1000) :]  # recent cycles are what matters; bounds fit time
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ExponentialSmoothing(
                y,
                trend="add" if trend else None,
                damped_trend=trend,
                seasonal="add",
                seasonal_periods=m,
                initialization_method="heuristic",
            ).fit()
        p = res.params
        alpha = float(p["smoothing_level"])
        beta = float(p["smoothing_trend"]) if trend else 0.0
        gamma = float(p["smoothing_seasonal"])
        phi = float(p["damping_trend"]) if trend else 1.0
        level = float(res.level[-1])
        tr = float(res.trend[-1]) if trend else 0.0
        season = np.asarray(res.season, dtype=float)[-m:]
        resid = y - np.asarray(res.fittedvalues, dtype=float)
        sigma = float(resid[m:].std()) if resid.shape[0] > m + 1 else float(resid.std())
        for v in (alpha, beta, gamma, phi, level, tr, sigma):
            if not math.isfinite(v):
                raise ValueError("Holt-Winters fit produced non-finite parameters")
        return cls(alpha, beta, gamma, phi, level, tr, season, sigma, trend)

    def advance(self, y: np.ndarray) -> None:
        a, b, g, phi = self.alpha, self.beta, self.gamma, self.phi
        lev, tr, ring, pos, m = self.level, self.trend, self.ring, self.pos, self.period
        for v in y.tolist():
            s_old = ring[pos]
            base = lev + phi * tr
            new_lev = a * (v - s_old) + (1.0 - a) * base
            tr = b * (new_lev - lev) + (1.0 - b) * phi * tr
            ring[pos] = g * (v - base) + (1.0 - g) * s_old
            lev = new_lev
            pos = (pos + 1) % m
        self.level, self.trend, self.pos = lev, tr, pos

    def _phis(self, h: int) -> np.ndarray:
        k = np.arange(1, h + 1, dtype=float)
        if self.phi == 1.0:
            return k
        return self.phi * (1.0 - self.phi**k) / (1.0 - self.phi)

    def mean(self, h: int) -> np.ndarray:
        idx = (self.pos + np.arange(h)) % self.period
        return self.level + self._phis(h) * self.trend + self.ring[idx]

    def var_mult(self, h: int) -> np.ndarray:
        vm = self._vm
        if vm is None or vm.shape[0] < h:
            hh = max(h, 256)
            j = np.arange(1, hh, dtype=float)
            c = self.alpha * (1.0 + self.beta * self._phis(hh - 1)) + self.gamma * (j % self.period == 0)
            vm = self._vm = np.concatenate(([1.0], 1.0 + np.cumsum(c * c)))
        return vm[:h]

    def describe(self) -> str:
        t = f", damped trend phi={self.phi:.2f}" if self.has_trend else ""
        return f"holt_winters(m={self.period}, alpha={self.alpha:.3f}, gamma={self.gamma:.3f}{t})"


class SeasonalProfile(Forecaster):
    """Mean seasonal shape over the last cycles + SES on the deseasonalised series."""

    kind = "seasonal_profile"

    def __init__(self, profile: np.ndarray, pos: int, ses: SES) -> None:
        super().__init__(ses.sigma)
        self.profile = profile
        self.period = profile.shape[0]
        self.pos = pos  # phase of the next step
        self.ses = ses

    @classmethod
    def fit(cls, y: np.ndarray, m: int, max_cycles: int = 8) -> SeasonalProfile:
        n = y.shape[0]
        k = min(n // m, max_cycles)
        block = y[n - k * m :].reshape(k, m)
        profile = (block - block.mean(axis=1, keepdims=True)).mean(axis=0)

        phases = (np.arange(n) - (n - k * m)) % m
        ses = SES.fit(y - profile[phases])
        return cls(profile, 0, ses)

    def advance(self, y: np.ndarray) -> None:
        m, pos, prof = self.period, self.pos, self.profile
        a, lev = self.ses.alpha, self.ses.level
        for v in y.tolist():
            lev += a * (v - prof[pos] - lev)
            pos = (pos + 1) % m
        self.ses.level, self.pos = lev, pos

    def mean(self, h: int) -> np.ndarray:
        return self.ses.level + self.profile[(self.pos + np.arange(h)) % self.period]

    def var_mult(self, h: int) -> np.ndarray:
        return self.ses.var_mult(h)

    def describe(self) -> str:
        return f"seasonal_profile(m={self.period}, alpha={self.ses.alpha:.3f})"


class AR(Forecaster):
    """ARIMA(p, d, 0) with d in {0, 1}, least squares with intercept, p by AIC."""

    kind = "arima"

    def __init__(self, coef: np.ndarray, const: float, d: int, history: np.ndarray, sigma: float) -> None:
        super().__init__(sigma)
        self.coef = coef  # coef[i] multiplies x_{t-1-i}
        self.const = const
        self.d = d
        p = coef.shape[0]
        self.hist = list(history[-(p + d) :].tolist()) if p + d else []
        self._vm: np.ndarray | None = None

    @classmethod
    def fit(cls, y: np.ndarray, d: int, max_p: int = 6) -> AR:
        x = np.diff(y) if d else y
        n = x.shape[0]
        best: tuple[float, np.ndarray, float, float] | None = None
        for p in range(1, max(1, min(max_p, n // 10)) + 1):
            rows = n - p
            if rows < 2 * p + 5:
                break
            X = np.column_stack([x[p - 1 - i : n - 1 - i] for i in range(p)] + [np.ones(rows)])
            target = x[p:]
            sol, *_ = np.linalg.lstsq(X, target, rcond=None)
            e = target - X @ sol
            s2 = float(np.dot(e, e)) / rows
            aic = rows * math.log(max(s2, 1e-300)) + 2 * (p + 1)
            if best is None or aic < best[0]:
                best = (aic, sol, s2, float(e.std()))
        if best is None:
            raise ValueError("too few points for AR")
        _, sol, _, sigma = best
        coef = np.asarray(sol[:-1], dtype=float)
        if d == 0 and np.sum(np.abs(coef)) >= 1.0 and coef.sum() >= 0.999:
            raise ValueError("non-stationary AR on levels")
        return cls(coef, float(sol[-1]), d, y, sigma)

    def advance(self, y: np.ndarray) -> None:
        keep = self.coef.shape[0] + self.d
        if keep and y.shape[0]:
            self.hist.extend(y[-keep:].tolist())
            del self.hist[:-keep]

    def mean(self, h: int) -> np.ndarray:
        p, d = self.coef.shape[0], self.d
        coef = self.coef.tolist()
        hist = self.hist
        if d:
            last = hist[-1]
            xs = [hist[i + 1] - hist[i] for i in range(len(hist) - 1)][-p:]
        else:
            last = 0.0
            xs = hist[-p:]
        xs = list(xs)
        out = np.empty(h)
        c = self.const
        level = last
        for k in range(h):
            nxt = c
            for i in range(p):
                nxt += coef[i] * xs[-1 - i]
            xs.append(nxt)
            if d:
                level += nxt
                out[k] = level
            else:
                out[k] = nxt
            if len(xs) > 4 * p + 8:
                del xs[: -p]
        return out

    def var_mult(self, h: int) -> np.ndarray:
        vm = self._vm
        if vm is None or vm.shape[0] < h:
            hh = max(h, 256)
            # Full AR polynomial including integration: phi(B)(1-B)^d.
            a = list(self.coef.tolist())
            if self.d:
                a = [a[0] + 1.0] + [a[i] - a[i - 1] for i in range(1, len(a))] + [-a[-1]]
            psi = np.zeros(hh)
            psi[0] = 1.0
            for j in range(1, hh):
                acc = 0.0
                for i in range(min(j, len(a))):
                    acc += a[i] * psi[j - 1 - i]
                psi[j] = acc
            vm = self._vm = np.cumsum(psi * psi)
        return vm[:h]

    def describe(self) -> str:
        return f"arima({self.coef.shape[0]},{self.d},0)"


class Combo(Forecaster):
    """Equal-weight combination of two forecasters (chosen when it beats both on the holdout)."""

    kind = "combination"

    def __init__(self, members: list[Forecaster]) -> None:
        super().__init__(float(np.sqrt(np.mean([m.sigma**2 for m in members]))))
        self.members = members
        self.period = max(m.period for m in members)

    def advance(self, y: np.ndarray) -> None:
        for m in self.members:
            m.advance(y)

    def mean(self, h: int) -> np.ndarray:
        return np.mean([m.mean(h) for m in self.members], axis=0)

    def sd(self, h: int) -> np.ndarray:
        # Conservative: the members' errors are strongly correlated, use their mean sd.
        return np.mean([m.sd(h) for m in self.members], axis=0)

    def var_mult(self, h: int) -> np.ndarray:
        return (self.sd(h) / max(self.sigma, 1e-300)) ** 2

    def describe(self) -> str:
        return "mean of " + " + ".join(m.describe() for m in self.members)


# ---------------------------------------------------------------------------- selection


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


def _candidates(m: int, n: int, persistent: bool = True) -> list[tuple[str, Callable[[np.ndarray], Forecaster]]]:
    c: list[tuple[str, Callable[[np.ndarray], Forecaster]]] = [
        ("naive", Naive.fit),
        ("ses", SES.fit),
        ("arima_d0", lambda y: AR.fit(y, 0)),
    ]
    if persistent:
        # Integrated models only for series that look integrated: on a series whose
        # levels barely autocorrelate they can only win a short holdout by luck.
        c.append(("drift", Drift.fit))
        c.append(("arima_d1", lambda y: AR.fit(y, 1)))
    if m > 1:
        c.append(("seasonal_naive", lambda y: SeasonalNaive.fit(y, m)))
        c.append(("seasonal_profile", lambda y: SeasonalProfile.fit(y, m)))
        if m <= HW_MAX_PERIOD:
            c.append(("holt_winters", lambda y: HoltWinters.fit(y, m, False)))
            c.append(("holt_winters_damped", lambda y: HoltWinters.fit(y, m, True)))
    return c


def _needs(name: str, m: int) -> int:
    if name.startswith(("holt_winters", "seasonal")):
        return 2 * m + 2
    return MIN_FIT_POINTS


def select_and_fit(t: np.ndarray, y: np.ndarray, horizon: int = 60, folds: int = 2) -> tuple[Forecaster, FitReport]:
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
        err = float(np.mean([np.mean(np.abs((pa + pb) / 2 - t)) for pa, pb, t in zip(preds[a], preds[b], tests)]))
        scores["combination"] = err
        if err < COMBO_MARGIN * scores[a]:
            combo = (a, b)
    last_exc: Exception | None = None
    if combo is not None:
        try:
            fc = Combo([builders[combo[0]](y), builders[combo[1]](y)])
            return fc, FitReport(fc.kind, fc.describe(), fc.period, season, step, n, H, scores, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - fall back to the single best
            last_exc = exc
    for name in order:
        build = builders[name]
        try:
            fc = build(y)
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
            continue
        return fc, FitReport(fc.kind, fc.describe(), fc.period, season, step, n, H, scores, time.perf_counter() - t0)
    raise RuntimeError(f"every candidate failed to fit: {last_exc}")


def fallback_forecaster(t: np.ndarray, y: np.ndarray) -> tuple[Forecaster, str]:
    """Cheap, fit-free forecaster for the request path (wide intervals by design)."""
    step = sampling_step(t)
    m = int(round(86400.0 / step)) if step > 0 else 0
    if 4 <= m and y.shape[0] >= 2 * m:
        d = y[m:] - y[:-m]
        fc: Forecaster = SeasonalNaive(y[-m:], 2.0 * float(d.std()))
        return fc, f"seasonal naive (m={m}, one day)"
    if y.shape[0] >= 2:
        fc = Naive(float(y[-1]), 2.0 * float(np.diff(y).std()) or abs(float(y[-1])) * 0.1)
    else:
        fc = Naive(float(y[-1]), abs(float(y[-1])) * 0.2 + 1e-9)
    return fc, "last value"


# ---------------------------------------------------------------------------- engine


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

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        s = settings or {}
        self.min_points = int(s.get("min_fit_points", 40))
        self.max_fit_points = int(s.get("max_fit_points", 4000))
        self.refit_points = int(s.get("refit_every_points", 2000))
        self.refit_age = float(s.get("refit_interval_sec", 6 * 3600.0))  # event time
        self.drift_threshold = float(s.get("drift_threshold", 2.5))
        self.selection_horizon = int(s.get("selection_horizon_steps", 60))
        self.max_steps = int(s.get("max_forecast_steps", 20000))
        self.entries: dict[tuple[str, str], Entry] = {}
        self.wanted: set[tuple[str, str]] = set()  # requested but never fitted: fit first
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
            if e is not None and e.failures and series.appended - e.fit_points < min(self.refit_points, max(self.min_points, e.fit_points)):
                return None  # failed on this data; retry once it has (up to) doubled
            return "never fitted"
        if e.fitting:
            return None
        if e.last_error and series.appended - e.fit_points < min(self.refit_points, max(self.min_points, e.fit_points)):
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

    def install(self, key: tuple[str, str], fc: Forecaster, report: FitReport, appended: int, fit_t: float, series: Any) -> None:
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
        self.catch_up(key, series)

    def failed(self, key: tuple[str, str], exc: BaseException, appended: int) -> None:
        e = self.entry(key)
        e.failures += 1
        e.fitting = False
        e.fit_points = appended
        e.last_error = f"{exc.__class__.__name__}: {exc}"

    # -- forecasts ---------------------------------------------------------------

    def forecast(self, key: tuple[str, str], series: Any, horizon_sec: float, level: float = 0.95) -> ForecastOut:
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

    def reset(self) -> None:
        self.entries.clear()
        self.wanted.clear()

    @property
    def fitted_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.forecaster is not None)
