"""The compiled detector kernel computes what the pure-Python reference computes.

The reference (``PythonAnomalyDetector``) is the specification and the fallback; the kernel
(``KernelAnomalyDetector``, C) must give the same score on every point of the NAB dev set, to
1e-9 (in practice bit for bit: both use the same IEEE operations in the same order).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from twin.evaluation import nab
from twin.models.statistical import anomaly
from twin.models.statistical.anomaly import (
    DEFAULT_CONFIG,
    KernelAnomalyDetector,
    PythonAnomalyDetector,
)

NAB_DIR = nab.default_nab_dir()
needs_nab = pytest.mark.skipif(
    not (NAB_DIR / "combined_windows.json").is_file(), reason=f"NAB data not found at {NAB_DIR}"
)


def test_the_kernel_is_built_and_is_the_default_backend() -> None:
    assert KernelAnomalyDetector is not None, "the C kernel did not build (pip install -e .)"
    assert anomaly.StreamingAnomalyDetector is KernelAnomalyDetector
    assert anomaly.BACKEND == "kernel"


@needs_nab
def test_kernel_equals_the_python_reference_on_every_nab_point() -> None:
    worst = 0.0
    n = 0
    for name in nab.discover_files(NAB_DIR / "data"):
        stamps, values = nab.load_series(NAB_DIR / "data" / name)
        t = stamps.astype("int64").astype(float)
        ref = PythonAnomalyDetector().score_batch(t, values)
        ker = KernelAnomalyDetector().score_batch(t, values)
        assert ker.shape == ref.shape
        worst = max(worst, float(np.max(np.abs(ker - ref))))
        n += len(values)
    assert n > 100_000
    assert worst <= 1e-9


@needs_nab
def test_point_by_point_update_equals_batch_and_the_reference() -> None:
    path = NAB_DIR / "data" / "realAWSCloudwatch" / "grok_asg_anomaly.csv"
    stamps, values = nab.load_series(path)
    t = stamps.astype("int64").astype(float)
    ker, ref = KernelAnomalyDetector(), PythonAnomalyDetector()
    one = np.array([ker.update(a, b) for a, b in zip(t.tolist(), values.tolist(), strict=True)])
    two = np.array([ref.update(a, b) for a, b in zip(t.tolist(), values.tolist(), strict=True)])
    assert np.array_equal(one, two)
    assert np.array_equal(one, KernelAnomalyDetector().score_batch(t, values))
    assert (ker.n, ker.last_score, ker.last_pvalue) == (ref.n, ref.last_score, ref.last_pvalue)
    assert ker.state_dict() == ref.state_dict()


def _hard_series() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    n = 9000
    t = 1.7e9 + 60.0 * np.arange(n)  # one-minute points: a full day of lag, windows wrap
    day = np.sin(2 * np.pi * np.arange(n) / 1440)
    quantised = np.round(rng.normal(0, 1, n)) * 0.5  # many ties in every tail
    irregular = np.sort(1.7e9 + rng.uniform(0, 86400 * 4, n))  # gaps and duplicates
    irregular[::50] = irregular[1::50]
    absurd = np.r_[rng.normal(0, 1, 3000), [1e308, -1e308, np.nan, np.inf, 5e-324], np.zeros(3000)]
    return [
        (t, 10 * day + rng.normal(0, 1, n)),
        (t, quantised),
        (t, np.full(n, 3.0)),
        (t, np.cumsum(rng.normal(0, 1, n))),  # random walk: tails drift away
        (t, -np.arange(n, dtype=float)),  # monotone: every refit falls back to a full selection
        (irregular, rng.pareto(1.2, n)),
        (1.7e9 + 300.0 * np.arange(len(absurd)), absurd),
    ]


@pytest.mark.parametrize("case", range(7))
def test_kernel_equals_the_reference_on_hard_synthetic_series(case: int) -> None:
    t, v = _hard_series()[case]
    ref = PythonAnomalyDetector().score_batch(t, v)
    ker = KernelAnomalyDetector().score_batch(t, v)
    assert np.all(np.isfinite(ker)) and np.all((ker >= 0) & (ker <= 1))
    np.testing.assert_allclose(ker, ref, rtol=0, atol=1e-9)


def test_kernel_equals_the_reference_with_a_small_window_config() -> None:
    cfg = dataclasses.replace(DEFAULT_CONFIG, window=300, warmup=50, season_seconds=3600.0)
    t, v = _hard_series()[0]
    ref = PythonAnomalyDetector(cfg).score_batch(t, v)
    ker = KernelAnomalyDetector(cfg).score_batch(t, v)
    np.testing.assert_allclose(ker, ref, rtol=0, atol=1e-9)


def test_state_is_bounded_and_measured() -> None:
    det = KernelAnomalyDetector()
    t, v = _hard_series()[0]
    det.score_batch(t, v)
    det.score_batch(t + 86400 * 7, v)
    # Five float64 windows of 4000 points, one day of (t, x) at one-minute sampling, bins.
    assert 5 * 4000 * 8 < det.state_bytes() < 5 * 4000 * 8 + 2 * 1441 * 8 + 40_000
    small = KernelAnomalyDetector()
    small.score_batch(t[:200], v[:200])
    assert small.state_bytes() < 24_000  # buffers grow with the series


def test_bad_input_gets_a_clear_error() -> None:
    det = KernelAnomalyDetector()
    with pytest.raises(ValueError, match="length"):
        det.score_batch(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError):
        det.update("x", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="configuration"):
        KernelAnomalyDetector(dataclasses.replace(DEFAULT_CONFIG, window=0))
    bare = KernelAnomalyDetector.__new__(KernelAnomalyDetector)
    with pytest.raises(RuntimeError, match="__init__"):
        bare.update(0.0, 1.0)


def test_the_python_fallback_is_chosen_by_environment() -> None:
    env = {**os.environ, "POLARIS_DETECTOR_BACKEND": "python"}
    code = "from twin.models.statistical import anomaly as a; print(a.BACKEND)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "python", out.stderr
