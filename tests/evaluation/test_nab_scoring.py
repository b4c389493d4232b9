"""The NAB scorer against hand-checkable cases, and ``eval nab`` end to end on real files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from twin.evaluation import nab
from twin.models.statistical.anomaly import DEFAULT_THRESHOLD

STANDARD, LOW_FP, LOW_FN = nab.PROFILES
NAB_DIR = nab.default_nab_dir()
needs_nab = pytest.mark.skipif(
    not (NAB_DIR / "combined_windows.json").is_file(), reason=f"NAB data not found at {NAB_DIR}"
)

N = 1000
STAMPS = np.datetime64("2024-01-01T00:00:00") + np.arange(N).astype("timedelta64[m]")
# Two windows, both after the 150-point probation: [400, 499] and [700, 749].
WINDOWS = [(STAMPS[400], STAMPS[499]), (STAMPS[700], STAMPS[749])]


def _file(scores: np.ndarray, name: str = "cat/synthetic.csv") -> nab.FileScoring:
    return nab.prepare_file(name, STAMPS, scores, WINDOWS)


def _fire_at(*idx: int) -> np.ndarray:
    s = np.zeros(N)
    s[list(idx)] = 1.0
    return s


def _normalised(files: list[nab.FileScoring], profile: nab.CostProfile) -> float:
    _, raw = nab.sweep_threshold(files, profile)
    n_win = sum(f.n_windows for f in files)
    return nab.normalised(raw, -profile.fn_weight * n_win, profile.tp_weight * n_win)


def test_published_profiles_have_the_nab_cost_matrices() -> None:
    weights = {p.name: (p.tp_weight, p.fp_weight, p.fn_weight) for p in nab.PROFILES}
    assert weights == {
        "standard": (1.0, 0.11, 1.0),
        "reward_low_FP_rate": (1.0, 0.22, 1.0),
        "reward_low_FN_rate": (1.0, 0.11, 2.0),
    }


def test_scaled_sigmoid_matches_the_published_anchor_points() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_points() -> None:
    assert nab.probation_length(4032) == 604
    assert nab.probation_length(1000) == 150
    assert nab.probation_length(20000) == 750


@pytest.mark.parametrize("profile", nab.PROFILES, ids=lambda p: p.name)
def test_null_detector_scores_zero_and_window_start_detector_scores_100(
    profile: nab.CostProfile,
) -> None:
    assert _normalised([_file(np.zeros(N))], profile) == pytest.approx(0.0)
    assert _normalised([_file(_fire_at(400, 700))], profile) == pytest.approx(100.0)


def test_early_detection_beats_late_detection() -> None:
    early = nab.score_at_threshold(_file(_fire_at(410, 705)), 0.5, STANDARD)
    middle = nab.score_at_threshold(_file(_fire_at(450, 725)), 0.5, STANDARD)
    late = nab.score_at_threshold(_file(_fire_at(495, 748)), 0.5, STANDARD)
    assert early["raw"] > middle["raw"] > late["raw"] > -2.0
    assert early["tp"] == middle["tp"] == late["tp"] == 2


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    one = nab.score_at_threshold(_file(_fire_at(420)), 0.5, STANDARD)
    many = nab.score_at_threshold(_file(_fire_at(420, 430, 480, 499)), 0.5, STANDARD)
    assert many["raw"] == pytest.approx(one["raw"])
    assert many["fp"] == 0


def test_false_positive_costs_fp_weight_far_from_windows_and_less_just_after_one() -> None:
    base = nab.score_at_threshold(_file(_fire_at(400, 700)), 0.5, LOW_FP)["raw"]
    before_any_window = nab.score_at_threshold(_file(_fire_at(300, 400, 700)), 0.5, LOW_FP)["raw"]
    just_after = nab.score_at_threshold(_file(_fire_at(400, 505, 700)), 0.5, LOW_FP)["raw"]
    far_after = nab.score_at_threshold(_file(_fire_at(400, 700, 999)), 0.5, LOW_FP)["raw"]
    assert base - before_any_window == pytest.approx(LOW_FP.fp_weight)
    assert 0.0 < base - just_after < base - far_after <= LOW_FP.fp_weight + 1e-12


def test_detections_in_the_probationary_period_are_ignored() -> None:
    base = nab.score_at_threshold(_file(_fire_at(400)), 0.5, STANDARD)
    with_probation_hits = nab.score_at_threshold(_file(_fire_at(5, 50, 149, 400)), 0.5, STANDARD)
    assert with_probation_hits == base


def test_missed_window_costs_fn_weight() -> None:
    assert nab.score_at_threshold(_file(np.zeros(N)), 0.5, LOW_FN)["raw"] == pytest.approx(-4.0)


def test_sweep_finds_the_same_optimum_as_brute_force() -> None:
    rng = np.random.default_rng(7)
    files = [_file(np.round(rng.random(N), 2), f"cat/f{i}.csv") for i in range(3)]
    for profile in nab.PROFILES:
        thr, raw = nab.sweep_threshold(files, profile)
        candidates = np.unique(np.concatenate([f.scores for f in files]))
        brute = max(
            sum(nab.score_at_threshold(f, t, profile)["raw"] for f in files) for t in candidates
        )
        assert raw == pytest.approx(max(brute, -profile.fn_weight * 6))
        assert sum(nab.score_at_threshold(f, thr, profile)["raw"] for f in files) == pytest.approx(
            raw
        )


@needs_nab
def test_random_detector_scores_low_on_real_nab_files() -> None:
    windows = nab.load_windows(NAB_DIR / "combined_windows.json")
    rng = np.random.default_rng(0)
    files = []
    for name in nab.discover_files(NAB_DIR / "data"):
        stamps, values = nab.load_series(NAB_DIR / "data" / name)
        files.append(nab.prepare_file(name, stamps, rng.random(len(values)), windows[name]))
    score = _normalised(files, STANDARD)
    assert 0.0 <= score < 25.0


SAMPLE = [
    "artificialNoAnomaly/art_flatline.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_ac20cd.csv",
]


@needs_nab
def test_eval_streams_the_detector_and_writes_nab_result_files(tmp_path: Path) -> None:
    report = nab.evaluate(
        NAB_DIR / "data", NAB_DIR / "combined_windows.json", tmp_path, files=SAMPLE
    )
    assert report.n_files == 2
    assert [p.profile for p in report.profiles] == [p.name for p in nab.PROFILES]
    for name in SAMPLE:
        _, values = nab.load_series(NAB_DIR / "data" / name)
        with open(tmp_path / name, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0][:3] == ["timestamp", "value", "anomaly_score"]
        assert len(rows) == len(values) + 1
        scores = np.array([float(r[2]) for r in rows[1:]])
        assert np.all((scores >= 0.0) & (scores <= 1.0))
        assert np.allclose([float(r[1]) for r in rows[1:]], values)
    flat = report.profiles[0].per_file[SAMPLE[0]]
    assert flat["fp"] == 0  # a flat line never alarms
    assert report.profiles[0].per_file[SAMPLE[1]]["tp"] == 1  # the jump to 100 % CPU is caught


@needs_nab
def test_main_prints_a_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    (data / "realAdExchange").mkdir(parents=True)
    src = NAB_DIR / "data" / "realAdExchange" / "exchange-3_cpc_results.csv"
    (data / "realAdExchange" / src.name).write_bytes(src.read_bytes())
    argv = ["--data", str(data), "--windows", str(NAB_DIR / "combined_windows.json")]
    assert nab.main([*argv, "--results", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "standard" in out and "realAdExchange" in out and "threshold" in out
    assert (tmp_path / "res" / "realAdExchange" / src.name).is_file()
    assert nab.main([*argv, "--json", "--profile", "standard", "--profile", "reward_low_FN"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["profiles"]) == ["standard", "reward_low_FN_rate"]
    assert doc["operating_threshold"] == DEFAULT_THRESHOLD
    assert set(doc["at_operating_threshold"]) == {"standard", "reward_low_FN_rate"}
    assert not math.isnan(doc["profiles"]["standard"]["score"])


def test_run_reports_missing_data_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nab.main(["--data", str(tmp_path / "nope"), "--windows", str(tmp_path / "w.json")]) == 2
    assert "not found" in capsys.readouterr().err
