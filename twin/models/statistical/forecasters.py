"""The forecasters of the statistical model, each a fitted model with its state.

Every forecaster keeps its *state* (level, trend, seasonal ring, last values) and can
``advance`` through new observations with O(1) work per point, without refitting;
forecasts are closed-form (vectorised numpy) from that state, which is what keeps a
cached forecast in the tens of microseconds. Prediction intervals are
``mean ± z·sd_h`` with the model's own h-step variance (ETS/ARIMA formulas) from the
one-step residual standard deviation.

Which forecaster a series gets is decided in ``selection``; keeping them up to date
and answering from them is the job of ``forecast.ForecastEngine``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "AR",
    "SES",
    "Combo",
    "Drift",
    "Forecaster",
    "HoltWinters",
    "Naive",
    "SeasonalNaive",
    "SeasonalProfile",
]

HW_MAX_CYCLES = 7


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
        self.ring = ring.astype(
            float
        ).copy()  # ring[pos] is the value one period before the next step
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

    def __init__(
        self,
        alpha: float,
        beta: float,
        gamma: float,
        phi: float,
        level: float,
        trend: float,
        season: np.ndarray,
        sigma: float,
        has_trend: bool,
    ) -> None:
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
            c = self.alpha * (1.0 + self.beta * self._phis(hh - 1)) + self.gamma * (
                j % self.period == 0
            )
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

    def __init__(
        self, coef: np.ndarray, const: float, d: int, history: np.ndarray, sigma: float
    ) -> None:
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
