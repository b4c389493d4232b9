"""Median forecasters for bursty series: state advance equals a fit on the longer
series, bursts barely move them, and the holdout picks them where they are better."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.models.statistical.robust import RobustLevel, SeasonalMedian
from twin.models.statistical.selection import SELECTION_FOLDS, select_and_fit


def bursty(n: int, m: int = 24, seed: int = 0) -> np.ndarray:
    """A daily shape plus noise plus bursts (2 % of points, 5-10x the noise, skewed up)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    y = 10 + 3 * np.sin(2 * np.pi * i / m) + rng.normal(0, 0.5, n)
    hits = rng.random(n) < 0.04
    y[hits] += rng.uniform(3, 8, int(hits.sum()))
    return y


def test_robust_level_advance_matches_a_fit_on_the_longer_series() -> None:
    y = bursty(500)
    a = RobustLevel.fit(y[:400], 24)
    a.advance(y[400:])
    b = RobustLevel.fit(y, 24)
    assert a.mean(5) == pytest.approx(b.mean(5))
    assert a.mean(3)[0] == pytest.approx(np.median(y[-24:]))


def test_seasonal_median_advance_matches_a_fit_on_the_longer_series() -> None:
    y = bursty(24 * 20)
    a = SeasonalMedian.fit(y[: 24 * 15 + 7], 24)
    a.advance(y[24 * 15 + 7 :])
    b = SeasonalMedian.fit(y, 24)
    assert a.mean(48) == pytest.approx(b.mean(48))
    assert a.k == b.k == 6


def test_a_burst_barely_moves_the_median_forecasters() -> None:
    y = bursty(24 * 10, seed=1)
    lvl = RobustLevel.fit(y, 24)
    sm = SeasonalMedian.fit(y, 24)
    before_l, before_s = lvl.mean(24).copy(), sm.mean(24).copy()
    burst = y[-3:] + 50.0  # three huge points
    lvl.advance(burst)
    sm.advance(burst)
    assert abs(lvl.mean(1)[0] - before_l[0]) < 1.0
    # The seasonal median forecasts the next cycle; the burst's phases move by < 2 noise sds.
    assert np.max(np.abs(sm.mean(24)[:-3] - np.roll(before_s, -3)[:-3])) < 1.0
    assert sm.sigma > 0 and math.isfinite(lvl.sigma)


def test_selection_prefers_medians_on_bursty_series_and_reports_its_holdout_error() -> None:
    """Out of sample on synthetic bursty series (not the NAB design set): the chosen model
    beats seasonal naive, and a median model is chosen on most of them."""
    wins = medians = 0
    for seed in range(6):
        y = bursty(24 * 40 + 60, seed=10 + seed)
        t = 3600.0 * np.arange(y.shape[0])
        fc, rep = select_and_fit(t[:-60], y[:-60], 60)
        assert math.isfinite(rep.holdout_mae) and rep.holdout_mae > 0
        assert rep.holdout_mae in rep.scores.values()  # the chosen one's score
        actual = y[-60:]
        mae = np.mean(np.abs(fc.mean(60) - actual))
        snaive = np.mean(np.abs(y[-84:-60][np.arange(60) % 24] - actual))
        wins += mae < snaive
        medians += "median" in rep.description or "robust" in rep.description
    assert wins >= 4
    assert medians >= 3
    assert SELECTION_FOLDS == 4

