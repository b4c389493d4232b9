"""Behaviour of the streaming anomaly detector on synthetic series, for both backends.

Every test runs against the pure-Python reference and the compiled kernel (the ``Detector``
fixture); tests/models/statistical/test_detector_kernel.py checks they agree on NAB.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from twin.models.statistical.anomaly import (
    DEFAULT_CONFIG,
    DEFAULT_THRESHOLD,
    DetectorConfig,
    KernelAnomalyDetector,
    PythonAnomalyDetector,
)

BACKENDS = {"python": PythonAnomalyDetector, "kernel": KernelAnomalyDetector}
StreamingAnomalyDetector = PythonAnomalyDetector  # rebound per test by the autouse fixture


@pytest.fixture(autouse=True, params=sorted(BACKENDS))
def _backend(request: pytest.FixtureRequest) -> None:
    global StreamingAnomalyDetector
    cls = BACKENDS[request.param]
    assert cls is not None, "the compiled kernel is not built (pip install -e . builds it)"
    StreamingAnomalyDetector = cls

STEP = 300.0  # five-minute samples, as in most NAB series
T0 = 1_700_000_000.0


def _stamps(n: int) -> np.ndarray:
    return T0 + STEP * np.arange(n)


def _noise(n: int, seed: int = 1) -> np.ndarray:
    return 50.0 + np.random.default_rng(seed).normal(0.0, 2.0, n)


def _scores(values: np.ndarray, config: DetectorConfig | None = None) -> np.ndarray:
    return StreamingAnomalyDetector(config).score_batch(_stamps(len(values)), values)


def test_scores_stay_in_unit_interval_on_varied_inputs() -> None:
    rng = np.random.default_rng(3)
    series = [
        _noise(1500),
        np.full(1500, 45.0),
        rng.pareto(1.5, 1500) * 1e8,  # heavy-tailed bytes counter
        np.r_[np.zeros(700), rng.integers(0, 2, 800) * 0.066],  # quantised, mostly flat
        -1e-6 * np.arange(1500.0),
        np.r_[_noise(600), [1e308, -1e308, 5e-324], np.zeros(600)],  # absurd magnitudes
    ]
    for values in series:
        s = _scores(values)
        assert np.all(np.isfinite(s))
        assert np.all((s >= 0.0) & (s <= 1.0))


def test_a_spike_scores_far_above_normal_points_and_fires() -> None:
    values = _noise(1500)
    values[1200] += 30.0
    s = _scores(values)
    normal = np.r_[s[200:1200], s[1201:]]
    assert s[1200] >= DEFAULT_THRESHOLD
    assert s[1200] > normal.max()
    assert np.mean(normal >= DEFAULT_THRESHOLD) < 0.005


def test_a_level_shift_fires_promptly() -> None:
    values = _noise(1500)
    values[1000:] += 12.0
    s = _scores(values)
    fired = np.nonzero(s >= DEFAULT_THRESHOLD)[0]
    assert fired.size and 1000 <= fired[fired >= 1000][0] <= 1005


def test_a_missing_daily_cycle_is_flagged_by_the_seasonal_view() -> None:
    per_day = int(86400 / STEP)
    day = np.where((np.arange(per_day) % per_day) < per_day // 3, 80.0, 20.0)
    values = np.tile(day, 12) + np.random.default_rng(5).normal(0.0, 1.0, 12 * per_day)
    missing = slice(9 * per_day, 9 * per_day + per_day // 3)
    values[missing] = 20.0 + np.random.default_rng(6).normal(0.0, 1.0, per_day // 3)
    s = _scores(values)
    ordinary = s[4 * per_day : 9 * per_day]
    assert s[missing].max() >= DEFAULT_THRESHOLD
    assert s[missing].max() > ordinary.max()
    # ~4-sigma day-over-day noise may fire rarely, a real alert rate stays far below 1 %.
    assert np.count_nonzero(ordinary >= DEFAULT_THRESHOLD) <= 3


def test_a_flat_line_never_fires() -> None:
    assert _scores(np.full(3000, 45.0)).max() < DEFAULT_THRESHOLD


def test_scores_are_causal_future_points_do_not_change_the_past() -> None:
    a = _noise(1200, seed=11)
    b = a.copy()
    b[800:] = np.random.default_rng(12).normal(500.0, 50.0, 400)
    sa, sb = _scores(a), _scores(b)
    assert np.array_equal(sa[:800], sb[:800])
    assert not np.array_equal(sa[800:], sb[800:])


def test_scoring_is_deterministic_and_batch_equals_streaming() -> None:
    values = _noise(1500, seed=4)
    values[900:] *= 1.5
    ts = _stamps(len(values))
    batch = StreamingAnomalyDetector().score_batch(ts, values)
    det = StreamingAnomalyDetector()
    one_by_one = np.array([det.update(t, v) for t, v in zip(ts, values, strict=True)])
    assert np.array_equal(batch, one_by_one)
    assert np.array_equal(batch, _scores(values))


def test_last_score_and_is_anomalous_track_the_latest_point() -> None:
    det = StreamingAnomalyDetector()
    for t, v in zip(_stamps(1000), _noise(1000), strict=True):
        det.update(t, v)
    assert det.last_score < DEFAULT_THRESHOLD and not det.is_anomalous()
    score = det.update(T0 + 1000 * STEP, 200.0)
    assert det.last_score == score >= DEFAULT_THRESHOLD
    assert det.is_anomalous() and det.is_anomalous(0.5) and not det.is_anomalous(1.01)
    assert det.state_dict()["n"] == 1001


def test_after_firing_the_next_points_are_suppressed() -> None:
    values = _noise(1500)
    values[1000] += 30.0
    values[1010] += 30.0
    s = _scores(values)
    assert s[1000] >= DEFAULT_THRESHOLD > s[1010]


def test_non_finite_values_are_skipped_without_poisoning_the_state() -> None:
    values = _noise(1500)
    clean = _scores(values)
    dirty = values.copy()
    dirty[700] = np.nan
    det = StreamingAnomalyDetector()
    out = det.score_batch(_stamps(1500), dirty)
    assert out[700] == 0.0
    assert np.all(np.isfinite(out))
    assert det.n == 1499 and clean.shape == out.shape


def test_state_stays_bounded_on_long_streams() -> None:
    cfg = dataclasses.replace(DEFAULT_CONFIG, window=500)
    det = StreamingAnomalyDetector(cfg)
    rng = np.random.default_rng(2)
    det.score_batch(_stamps(6000), rng.normal(0.0, 1.0, 6000).cumsum())
    inner = det._internals()
    assert inner["value_n"] == 500
    assert inner["lagged"] <= 288 + 1  # one day of 5-minute points plus the reference
    assert 0 < inner["bins"] <= 500
    # 5 windows of 500 float64, the stuck-run window, one day of (t, x) and the bin table
    # (Python objects make the reference's day of (t, x) tuples ~5x bigger than the kernel's;
    # the kernel adds its tail-candidate lists, ~100 values per tail side).
    assert det.state_bytes() < (80_000 if det.backend == "python" else 48_000)


def test_config_is_frozen_and_threshold_matches_the_firing_level() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.window = 10  # type: ignore[misc]
    assert pytest.approx(1.0 - DEFAULT_CONFIG.fire_p) == DEFAULT_THRESHOLD
    assert 0.99 < DEFAULT_THRESHOLD < 1.0
