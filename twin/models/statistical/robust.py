"""Robust forecasters for bursty series (ad exchanges, request bursts, spiky CPU).

Means chase bursts: after a spike, SES, AR and Holt-Winters carry part of it into every
future step, and a seasonal naive forecast repeats yesterday's burst at the same hour.
The absolute error these series are judged by is minimised by *medians*, and the two
models here are the median counterparts of a level model and a seasonal model:

- ``RobustLevel``: the median of the last ``w`` points (``w`` = one season when there
  is one, else 24 points): a flat forecast that a burst moves only once it lasts more
  than half the window.
- ``SeasonalMedian``: per phase of the season, the median over the last ``k`` cycles
  (up to 6), shifted by the median of the latest cycle's deviations from that profile
  (so a level change carries over, a burst does not).

Both keep their state in fixed rings and ``advance`` in O(1) per point (the medians are
recomputed lazily when a forecast is asked for, O(k·m)). Intervals use a robust sigma
(1.4826 × the MAD of the in-sample one-step errors, never below their RMS's fifth); the
selection by holdout decides where they are better than the mean-based models.
"""

from __future__ import annotations

import numpy as np

from twin.models.statistical.forecasters import Forecaster

MAD_TO_SD = 1.4826
MAX_CYCLES = 6


def _robust_sigma(e: np.ndarray) -> float:
    e = e[np.isfinite(e)]
    if e.shape[0] < 2:
        return 0.0
    mad = float(np.median(np.abs(e - np.median(e)))) * MAD_TO_SD
    rms = float(np.sqrt(np.mean(e * e)))
    return max(mad, 0.2 * rms)


class RobustLevel(Forecaster):
    kind = "robust_level"

    def __init__(self, window: np.ndarray, sigma: float) -> None:
        super().__init__(sigma)
        self.ring = window.astype(float).copy()
        self.w = self.ring.shape[0]
        self.pos = 0
        self._level: float | None = None

    @classmethod
    def fit(cls, y: np.ndarray, w: int = 24) -> RobustLevel:
        w = max(3, min(w, y.shape[0] // 2))
        n = y.shape[0]
        # One-step errors of the rolling median (on a bounded tail: fit cost stays small).
        lo = max(w, n - 2000)
        win = np.lib.stride_tricks.sliding_window_view(y[lo - w : n - 1], w)
        e = y[lo:] - np.median(win, axis=1)
        return cls(y[-w:], _robust_sigma(e))

    def advance(self, y: np.ndarray) -> None:
        for v in y.tolist():
            self.ring[self.pos] = v
            self.pos = (self.pos + 1) % self.w
        if y.shape[0]:
            self._level = None

    def mean(self, h: int) -> np.ndarray:
        if self._level is None:
            self._level = float(np.median(self.ring))
        return np.full(h, self._level)

    def var_mult(self, h: int) -> np.ndarray:
        # A level held from a w-point median: its own error adds ~1/w of the noise per
        # step ahead of drift; the noise itself does not accumulate.
        return 1.0 + np.arange(h, dtype=float) / self.w

    def describe(self) -> str:
        return f"robust_level(median of {self.w})"


class SeasonalMedian(Forecaster):
    kind = "seasonal_median"

    def __init__(self, hist: np.ndarray, m: int, sigma: float) -> None:
        super().__init__(sigma)
        self.period = m
        k = min(MAX_CYCLES, hist.shape[0] // m)
        self.k = k
        self.ring = hist[-k * m :].astype(float).copy()  # oldest first; ring[pos] is k cycles back
        self.pos = 0
        self._fc: np.ndarray | None = None

    @classmethod
    def fit(cls, y: np.ndarray, m: int) -> SeasonalMedian:
        n = y.shape[0]
        k = min(MAX_CYCLES, n // m - 1)
        if k < 2:
            raise ValueError("seasonal median needs at least three cycles")
        model = cls(y[: n - m], m, 0.0)  # profile from the cycles before the last one
        e = y[n - m :] - model.mean(m)  # its errors over the last cycle (out of sample)
        full = cls(y, m, _robust_sigma(e))
        return full

    def _profile(self) -> np.ndarray:
        m, k = self.period, self.k
        ring = np.roll(self.ring, -self.pos).reshape(
            k, m
        )  # cycles oldest → newest, phase 0 = next step
        prof = np.median(ring, axis=0)
        shift = float(np.median(ring[-1] - prof))
        return prof + shift

    def advance(self, y: np.ndarray) -> None:
        size = self.ring.shape[0]
        for v in y.tolist():
            self.ring[self.pos] = v
            self.pos = (self.pos + 1) % size
        if y.shape[0]:
            self._fc = None

    def mean(self, h: int) -> np.ndarray:
        if self._fc is None:
            self._fc = self._profile()
        return self._fc[np.arange(h) % self.period]

    def var_mult(self, h: int) -> np.ndarray:
        return 1.0 + np.floor(np.arange(h) / self.period) / self.k

    def describe(self) -> str:
        return f"seasonal_median(m={self.period}, {self.k} cycles)"
