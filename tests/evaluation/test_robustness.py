"""Robustness batteries at small size (bench/robustness.py prints them on the whole dev set)."""

from __future__ import annotations

import numpy as np
import pytest

from twin.evaluation import nab, robustness

NAB_DIR = nab.default_nab_dir()
pytestmark = pytest.mark.skipif(
    not (NAB_DIR / "combined_windows.json").is_file(), reason=f"NAB data not found at {NAB_DIR}"
)
FILES = [
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "artificialWithAnomaly/art_daily_flatmiddle.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
    "realAdExchange/exchange-3_cpc_results.csv",
    "artificialNoAnomaly/art_daily_small_noise.csv",
]


@pytest.fixture(scope="module")
def corpus() -> list[robustness.Series]:
    return robustness.load_corpus(NAB_DIR / "data", NAB_DIR / "combined_windows.json", FILES)


def test_transforms_keep_labels_aligned_and_are_what_they_say(
    corpus: list[robustness.Series],
) -> None:
    s = corpus[2]
    rng = np.random.default_rng(0)
    up = robustness.TRANSFORMS["resample_2x"](s, rng)
    assert len(up.t) == 2 * len(s.t) - 1 and np.all(np.diff(up.t) > 0)
    down = robustness.TRANSFORMS["resample_half"](s, rng)
    assert len(down.t) == (len(s.t) + 1) // 2
    shifted = robustness.TRANSFORMS["shift_6h"](s, rng)
    assert shifted.windows[0][0] - s.windows[0][0] == 6 * 3600
    dup = robustness.TRANSFORMS["duplicates"](s, rng)
    assert len(dup.t) > len(s.t) and np.all(np.diff(dup.t) >= 0)
    gaps = robustness.TRANSFORMS["gaps"](s, rng)
    assert len(gaps.t) < len(s.t)
    for a, b in s.windows:  # holes never fall inside a labelled window
        inside = (s.t >= a) & (s.t <= b)
        assert np.isin(s.t[inside], gaps.t).all()
    long_ = robustness.TRANSFORMS["long_4x_drift"](s, rng)
    assert len(long_.t) == 4 * len(s.t) and len(long_.windows) == 4 * len(s.windows)
    assert np.all(np.diff(long_.t) > 0)


def test_invariant_transforms_leave_the_score_unchanged(corpus: list[robustness.Series]) -> None:
    rows = {
        r.name: r
        for r in robustness.transform_battery(
            corpus, transforms=["scale_offset", "shift_6h", "shift_13h", "gaps", "duplicates"]
        )
    }
    assert rows["original"].score > 60
    # The detector never looks at the clock or the units: identical scores.
    assert rows["shift_6h"].delta == 0.0 and rows["shift_13h"].delta == 0.0
    assert abs(rows["scale_offset"].delta_fixed) <= 1.0
    # Holes outside the windows and re-delivered points cost at most a few points.
    assert abs(rows["gaps"].delta_fixed) <= 6.0
    assert abs(rows["duplicates"].delta_fixed) <= 6.0


def test_injected_anomalies_are_detected_per_class(corpus: list[robustness.Series]) -> None:
    real = [s for s in corpus if s.name.startswith(("real", "artificialNo"))]
    rows = {
        r.name: r
        for r in robustness.injection_battery(real, per_file=2, horizon=48)
    }
    assert set(rows) == set(robustness.INJECTIONS)
    assert all(r.n > 0 for name, r in rows.items() if name != "missing_seasonality")
    for name in ("level_shift", "variance_change", "flatline_zero"):
        assert rows[name].rate >= 0.7, name
        assert rows[name].median_delay <= 5, name
    assert rows["trend_change"].rate >= 0.5
    assert rows["level_shift"].baseline_rate <= 0.2  # the untouched spans rarely fire
    text = robustness.format_injections(list(rows.values()), 48)
    assert "stuck_value" in text and "median delay" in text
