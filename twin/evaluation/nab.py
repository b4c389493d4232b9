"""Numenta Anomaly Benchmark (NAB) scoring and the ``eval nab`` command.

This is an independent implementation of the NAB v1.1 scoring rules (Lavin & Ahmad,
"Evaluating Real-time Anomaly Detection Algorithms", 2015) so that the twin's streaming
detector can be compared with the published NAB results without depending on the NAB
code base:

* the first ``min(floor(0.15 * n), 750)`` points of every file are a probationary period
  in which detections are ignored (the detector is still fed those points);
* a detection inside a labelled window is a true positive worth
  ``tp_weight * sigma(pos) / sigma(-1)`` where ``pos`` runs from -1 at the window start to
  ~0 at its end and ``sigma(x) = 2 / (1 + exp(5x)) - 1``; only the best (i.e. earliest)
  detection in a window counts and later ones are neither rewarded nor penalised;
* a window without detection costs ``fn_weight``;
* a detection outside any window costs ``fp_weight * |sigma(d)|`` where ``d`` is its
  distance past the end of the preceding window in units of that window's width (so FPs
  right after a window are nearly free, far ones cost the full ``fp_weight``), or the full
  ``fp_weight`` if no window precedes it;
* the detection threshold is chosen per profile by an exact sweep over every distinct
  score in the corpus, maximising the corpus total (NAB v1.1 sweeps the same way);
* ``normalised = 100 * (raw - null) / (perfect - null)`` with ``null = -fn_weight`` and
  ``perfect = tp_weight`` per window.

Per-category scores apply the same normalisation to the category's windows at the
corpus threshold (a category without windows, e.g. ``artificialNoAnomaly``, only has a raw
score: its false-positive cost). Besides NAB's optimised thresholds, ``eval nab`` also
scores the detector's fixed ``DEFAULT_THRESHOLD``: that is what the twin alerts on.

The scoring is split into a per-file preparation (:func:`prepare_file`, one weight and
window id per scorable point) and a corpus sweep (:func:`sweep_threshold`) so that the
threshold search costs a single sort of the whole corpus.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROFILES",
    "CostProfile",
    "CvFold",
    "CvResult",
    "FileScoring",
    "NabReport",
    "ProfileResult",
    "configure_parser",
    "cross_validate",
    "default_nab_dir",
    "evaluate",
    "evaluate_series",
    "load_series",
    "load_windows",
    "main",
    "prepare_file",
    "probation_length",
    "run",
    "scaled_sigmoid",
    "score_at_threshold",
    "sweep_threshold",
]


@dataclass(frozen=True, slots=True)
class CostProfile:
    """NAB application profile: weights of the cost matrix (``tn`` is unused by NAB)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float
    tn_weight: float = 1.0


#: The three published NAB v1.1 profiles (``config/profiles.json``).
PROFILES: tuple[CostProfile, ...] = (
    CostProfile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    CostProfile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    CostProfile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
)

_ALIASES = {"reward_low_FP": "reward_low_FP_rate", "reward_low_FN": "reward_low_FN_rate"}

PROBATION_PERCENT = 0.15


def default_nab_dir() -> Path:
    """Return the NAB data directory: ``$POLARIS_NAB_DIR`` or ``<repo>/../shared/nab``."""
    env = os.environ.get("POLARIS_NAB_DIR")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "nab"


def probation_length(n: int) -> int:
    """NAB's probationary period: 15 % of the file, capped at 15 % of 5000 points."""
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000))


def scaled_sigmoid(x: float | np.ndarray) -> float | np.ndarray:
    """NAB's reward curve: +0.987 at ``x=-1`` (window start), 0 at ``x=0``, -1 from ``x=3``."""
    xa = np.asarray(x, dtype=float)
    val = 2.0 / (1.0 + np.exp(5.0 * xa)) - 1.0
    val = np.where(xa >= 3.0, -1.0, val)
    return float(val) if np.ndim(x) == 0 else val


_MAX_TP = float(scaled_sigmoid(-1.0))


# --------------------------------------------------------------------------- loading


def load_series(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a NAB ``timestamp,value`` CSV into (datetime64[s] timestamps, float values)."""
    stamps: list[str] = []
    values: list[float] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        ti, vi = header.index("timestamp"), header.index("value")
        for row in reader:
            if not row:
                continue
            stamps.append(row[ti])
            values.append(float(row[vi]))
    return np.array(stamps, dtype="datetime64[s]"), np.asarray(values, dtype=float)


def load_windows(
    path: str | os.PathLike[str],
) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """Read ``combined_windows.json`` as ``{"<category>/<file>.csv": [(start, end), ...]}``."""
    with open(path) as fh:
        raw = json.load(fh)
    out: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for key, wins in raw.items():
        out[key] = sorted(
            (np.datetime64(a.replace(" ", "T"), "s"), np.datetime64(b.replace(" ", "T"), "s"))
            for a, b in wins
        )
    return out


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class FileScoring:
    """Per-file scoring inputs, independent of the threshold.

    ``scores`` / ``window`` / ``unweighted`` cover only the post-probation points.
    ``window`` is the window index (within this file) of each point or -1 outside windows;
    ``unweighted`` is the scaled-sigmoid value (TP reward inside, FP penalty outside).
    """

    name: str
    n_windows: int
    scores: np.ndarray
    window: np.ndarray
    unweighted: np.ndarray


def window_index_ranges(
    timestamps: np.ndarray, windows: Sequence[tuple[np.datetime64, np.datetime64]]
) -> list[tuple[int, int]]:
    """Inclusive index range of each window (first point >= start, last point <= end)."""
    ranges = []
    for start, end in windows:
        lo = int(np.searchsorted(timestamps, start, side="left"))
        hi = int(np.searchsorted(timestamps, end, side="right")) - 1
        ranges.append((lo, hi))
    return ranges


def prepare_file(
    name: str,
    timestamps: np.ndarray,
    scores: np.ndarray,
    windows: Sequence[tuple[np.datetime64, np.datetime64]],
) -> FileScoring:
    """Assign each point its window and its NAB sigmoid weight (before the cost matrix)."""
    n = len(scores)
    ranges = window_index_ranges(timestamps, windows)
    window = np.full(n, -1, dtype=np.int64)
    unweighted = np.full(n, -1.0)  # FPs with no preceding window cost the full weight
    idx = np.arange(n)
    prev_end: int | None = None
    prev_width = 0.0
    for k, (lo, hi) in enumerate(ranges):
        if prev_end is not None:
            # FP region between the previous window and this one.
            seg = idx[prev_end + 1 : lo]
            unweighted[prev_end + 1 : lo] = _fp_weights(seg, prev_end, prev_width)
        width = float(hi - lo + 1)
        seg = idx[lo : hi + 1]
        window[lo : hi + 1] = k
        unweighted[lo : hi + 1] = scaled_sigmoid(-(hi - seg + 1) / width)
        prev_end, prev_width = hi, width
    if prev_end is not None:
        seg = idx[prev_end + 1 :]
        unweighted[prev_end + 1 :] = _fp_weights(seg, prev_end, prev_width)
    p = probation_length(n)
    return FileScoring(
        name=name,
        n_windows=len(ranges),
        scores=np.asarray(scores, dtype=float)[p:],
        window=window[p:],
        unweighted=unweighted[p:],
    )


def _fp_weights(seg: np.ndarray, prev_end: int, prev_width: float) -> np.ndarray:
    denom = max(prev_width - 1.0, 1.0)
    return np.asarray(scaled_sigmoid(np.abs(prev_end - seg) / denom))


def score_at_threshold(f: FileScoring, threshold: float, profile: CostProfile) -> dict[str, float]:
    """Raw NAB score of one file at a fixed threshold, with TP/FP/FN counts."""
    det = f.scores >= threshold
    out_win = f.window < 0
    fp_mask = det & out_win
    fp_score = float(np.sum(f.unweighted[fp_mask])) * profile.fp_weight
    tp_score = 0.0
    tp = 0
    for k in range(f.n_windows):
        m = det & (f.window == k)
        if m.any():
            tp += 1
            tp_score += float(f.unweighted[m].max()) * profile.tp_weight / _MAX_TP
    fn = f.n_windows - tp
    raw = tp_score + fp_score - fn * profile.fn_weight
    return {"raw": raw, "tp": tp, "fp": int(fp_mask.sum()), "fn": fn}


def sweep_threshold(files: Sequence[FileScoring], profile: CostProfile) -> tuple[float, float]:
    """Exact corpus-wide threshold optimisation; returns (best threshold, best raw score).

    Points are visited in decreasing score order; lowering the threshold past a point adds
    its FP cost, or improves its window's best TP reward. All points sharing a score
    enter together, so candidate thresholds are the distinct scores.
    """
    n_windows = sum(f.n_windows for f in files)
    null = -profile.fn_weight * n_windows
    if not files:
        return 1.0, null
    scores = np.concatenate([f.scores for f in files])
    offsets = np.cumsum([0] + [f.n_windows for f in files[:-1]])
    win = np.concatenate(
        [np.where(f.window >= 0, f.window + o, -1) for f, o in zip(files, offsets, strict=True)]
    )
    unw = np.concatenate([f.unweighted for f in files])
    order = np.argsort(-scores, kind="stable")
    scores, win, unw = scores[order], win[order], unw[order]
    # Contribution of each point when it becomes a detection: FPs are additive ...
    delta = np.where(win < 0, unw * profile.fp_weight, 0.0)
    # ... TPs only count when they beat the window's current best (a running max per window).
    in_win = np.nonzero(win >= 0)[0]
    best = np.full(n_windows, np.nan)
    tp_val = unw * (profile.tp_weight / _MAX_TP)
    for i in in_win:
        w = win[i]
        v = tp_val[i]
        cur = best[w]
        if np.isnan(cur):
            delta[i] = v + profile.fn_weight
            best[w] = v
        elif v > cur:
            delta[i] = v - cur
            best[w] = v
    total = null + np.cumsum(delta)
    # Only positions where the next score differs are valid cut points.
    last_of_group = np.ones(len(scores), dtype=bool)
    last_of_group[:-1] = scores[:-1] != scores[1:]
    cand = np.nonzero(last_of_group)[0]
    j = cand[int(np.argmax(total[cand]))]
    if total[j] <= null:
        # Never firing is at least as good: a threshold above every score.
        return float(np.nextafter(scores[0], np.inf)), null
    return float(scores[j]), float(total[j])


# --------------------------------------------------------------------------- evaluation


@dataclass(slots=True)
class ProfileResult:
    """Corpus result for one profile at its optimised threshold."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    tp: int
    fp: int
    fn: int
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(slots=True)
class NabReport:
    """Everything ``eval nab`` prints."""

    profiles: list[ProfileResult]
    n_files: int
    n_points: int
    seconds_detect: float
    operating: list[ProfileResult] = field(default_factory=list)
    operating_threshold: float | None = None
    cv: list[CvResult] = field(default_factory=list)

    @property
    def us_per_point(self) -> float:
        """Detector CPU time per point (includes numpy conversion, excludes file I/O)."""
        return 1e6 * self.seconds_detect / max(self.n_points, 1)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form of the report (``--json``)."""
        out: dict[str, object] = {
            "n_files": self.n_files,
            "n_points": self.n_points,
            "us_per_point": self.us_per_point,
            "operating_threshold": self.operating_threshold,
            "at_operating_threshold": {p.profile: p.score for p in self.operating},
            "profiles": {
                p.profile: {
                    "score": p.score,
                    "threshold": p.threshold,
                    "raw": p.raw,
                    "null": p.null,
                    "perfect": p.perfect,
                    "tp": p.tp,
                    "fp": p.fp,
                    "fn": p.fn,
                    "per_category": p.per_category,
                    "per_file": p.per_file,
                }
                for p in self.profiles
            },
        }
        if self.cv:
            out["cv"] = {c.profile: c.to_dict() for c in self.cv}
        return out


def normalised(raw: float, null: float, perfect: float) -> float:
    """NAB normalisation; NaN where a subset has no windows (null == perfect)."""
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(
    files: Sequence[FileScoring],
    profiles: Iterable[CostProfile] = PROFILES,
    threshold: float | None = None,
) -> list[ProfileResult]:
    """Score every profile and break the result down by category and file.

    With ``threshold=None`` each profile gets its optimised threshold (NAB's way);
    otherwise the given operating threshold is used for all profiles.
    """
    results = []
    for prof in profiles:
        if threshold is None:
            thr, raw = sweep_threshold(files, prof)
        else:
            thr = threshold
            raw = sum(score_at_threshold(f, thr, prof)["raw"] for f in files)
        n_win = sum(f.n_windows for f in files)
        null, perfect = -prof.fn_weight * n_win, prof.tp_weight * n_win
        per_file: dict[str, dict[str, float]] = {}
        cats: dict[str, dict[str, float]] = {}
        tot = {"tp": 0, "fp": 0, "fn": 0}
        for f in files:
            s = score_at_threshold(f, thr, prof)
            per_file[f.name] = s
            for k in tot:
                tot[k] += int(s[k])
            cat = f.name.split("/")[0]
            c = cats.setdefault(
                cat, {"raw": 0.0, "null": 0.0, "perfect": 0.0, "tp": 0, "fp": 0, "fn": 0}
            )
            c["raw"] += s["raw"]
            c["null"] -= prof.fn_weight * f.n_windows
            c["perfect"] += prof.tp_weight * f.n_windows
            for k in ("tp", "fp", "fn"):
                c[k] += s[k]
        for c in cats.values():
            c["score"] = normalised(c["raw"], c["null"], c["perfect"])
        results.append(
            ProfileResult(
                profile=prof.name,
                threshold=thr,
                raw=raw,
                null=null,
                perfect=perfect,
                score=normalised(raw, null, perfect),
                per_category=cats,
                per_file=per_file,
                **tot,
            )
        )
    return results


# --------------------------------------------------------------------------- cross-validation


def category_of(name: str) -> str:
    """``"<category>/<file>.csv"`` -> ``"<category>"``."""
    return name.split("/")[0]


@dataclass(frozen=True, slots=True)
class CvFold:
    """One held-out category: what was chosen on the others, and how it scored here."""

    held_out: str
    candidate: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True, slots=True)
class CvResult:
    """Leave-one-category-out result of one profile.

    ``score`` normalises the sum of the held-out raw scores over the corpus's windows, so
    it is directly comparable with the in-sample corpus score (every point is scored once,
    at a threshold chosen without its category).
    """

    profile: str
    score: float
    raw: float
    null: float
    perfect: float
    folds: tuple[CvFold, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "score": self.score,
            "raw": self.raw,
            "folds": {
                f.held_out: {
                    "score": f.score,
                    "raw": f.raw,
                    "threshold": f.threshold,
                    "candidate": f.candidate,
                    "tp": f.tp,
                    "fp": f.fp,
                    "fn": f.fn,
                }
                for f in self.folds
            },
        }


def cross_validate(
    candidates: Mapping[str, Sequence[FileScoring]] | Sequence[FileScoring],
    profiles: Iterable[CostProfile] = PROFILES,
) -> list[CvResult]:
    """Leave-one-category-out: choose on the other categories, score the held-out one.

    ``candidates`` maps a name to the scored corpus of one detector variant (the same files
    in the same order); a plain sequence is a single variant. In each fold the variant and
    the threshold with the best raw score on the training categories are chosen together
    (NAB's exact sweep), then applied unchanged to the held-out category. With one variant
    this cross-validates the threshold alone.
    """
    cands = {"default": candidates} if not isinstance(candidates, Mapping) else candidates
    if not cands:
        raise ValueError("cross_validate needs at least one candidate")
    names = list(cands)
    corpus = list(cands[names[0]])
    cats = sorted({category_of(f.name) for f in corpus})
    results = []
    for prof in profiles:
        folds = []
        for cat in cats:
            best: tuple[float, str, float] | None = None
            for cname in names:
                train = [f for f in cands[cname] if category_of(f.name) != cat]
                thr, raw = sweep_threshold(train, prof)
                if best is None or raw > best[0]:
                    best = (raw, cname, thr)
            assert best is not None
            _, cname, thr = best
            test = [f for f in cands[cname] if category_of(f.name) == cat]
            per = [score_at_threshold(f, thr, prof) for f in test]
            n_win = sum(f.n_windows for f in test)
            null, perfect = -prof.fn_weight * n_win, prof.tp_weight * n_win
            raw = sum(s["raw"] for s in per)
            folds.append(
                CvFold(
                    held_out=cat,
                    candidate=cname,
                    threshold=thr,
                    raw=raw,
                    null=null,
                    perfect=perfect,
                    score=normalised(raw, null, perfect),
                    tp=sum(int(s["tp"]) for s in per),
                    fp=sum(int(s["fp"]) for s in per),
                    fn=sum(int(s["fn"]) for s in per),
                )
            )
        raw = sum(f.raw for f in folds)
        null = sum(f.null for f in folds)
        perfect = sum(f.perfect for f in folds)
        results.append(
            CvResult(
                profile=prof.name,
                score=normalised(raw, null, perfect),
                raw=raw,
                null=null,
                perfect=perfect,
                folds=tuple(folds),
            )
        )
    return results


def discover_files(data_dir: Path) -> list[str]:
    """All ``<category>/<file>.csv`` below ``data_dir``, sorted."""
    return sorted(
        str(p.relative_to(data_dir)).replace(os.sep, "/") for p in data_dir.glob("*/*.csv")
    )


def _default_score_fn(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    from twin.models.statistical.anomaly import StreamingAnomalyDetector

    return StreamingAnomalyDetector().score_batch(ts, values)


def evaluate(
    data_dir: Path,
    windows_file: Path,
    results_dir: Path | None = None,
    files: Sequence[str] | None = None,
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    profiles: Iterable[CostProfile] = PROFILES,
    operating_threshold: float | None = None,
    cv: bool = False,
    keep: list[Any] | None = None,
) -> NabReport:
    """Stream every file through a fresh detector, optionally write NAB results, score.

    ``score_fn(epoch_seconds, values) -> scores`` defaults to a fresh
    :class:`StreamingAnomalyDetector` per file, i.e. exactly what the twin runs per series;
    in that case the report also scores the detector's fixed ``DEFAULT_THRESHOLD`` (or
    ``operating_threshold`` if given), the number that matters for the twin's alerts.
    ``cv=True`` adds the leave-one-category-out scores (:func:`cross_validate`).
    """
    windows = load_windows(windows_file)
    names = list(files) if files is not None else discover_files(data_dir)

    def items() -> Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[tuple[object, object]]]]:
        for name in names:
            stamps, values = load_series(data_dir / name)
            yield name, stamps, values, windows.get(name, [])

    return evaluate_series(
        items(),
        score_fn=score_fn,
        profiles=profiles,
        operating_threshold=operating_threshold,
        cv=cv,
        results_dir=results_dir,
        keep=keep,
    )


def evaluate_series(
    series: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[tuple[Any, Any]]]],
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    profiles: Iterable[CostProfile] = PROFILES,
    operating_threshold: float | None = None,
    cv: bool = False,
    results_dir: Path | None = None,
    keep: list[Any] | None = None,
) -> NabReport:
    """Score in-memory series ``(name, stamps, values, windows)``; see :func:`evaluate`.

    ``stamps`` are ``datetime64`` or epoch seconds (float), with windows of the same kind;
    the robustness batteries feed transformed copies of the corpus through here. ``keep``, if
    given, receives a :class:`twin.evaluation.nab_plot.SeriesTrace` per series (for plots).
    """
    if score_fn is None and operating_threshold is None:
        from twin.models.statistical.anomaly import DEFAULT_THRESHOLD

        operating_threshold = DEFAULT_THRESHOLD
    fn = score_fn or _default_score_fn
    profiles = list(profiles)
    prepared = []
    n_points = 0
    t_detect = 0.0
    for name, stamps, values, wins in series:
        if np.issubdtype(stamps.dtype, np.datetime64):
            epoch = stamps.astype("datetime64[s]").astype("int64").astype(float)
        else:
            epoch = np.asarray(stamps, dtype=float)
        t0 = time.thread_time()  # CPU time: the machine may be shared
        scores = np.asarray(fn(epoch, values), dtype=float)
        t_detect += time.thread_time() - t0
        n_points += len(values)
        if results_dir is not None:
            _write_result(results_dir / name, stamps, values, scores, wins)
        if keep is not None:
            from twin.evaluation.nab_plot import SeriesTrace

            ranges = window_index_ranges(stamps, wins)
            keep.append(
                SeriesTrace(
                    name, stamps, values, scores, wins, ranges, probation_length(len(stamps))
                )
            )
        prepared.append(prepare_file(name, stamps, scores, wins))
    return NabReport(
        profiles=score_corpus(prepared, profiles),
        n_files=len(prepared),
        n_points=n_points,
        seconds_detect=t_detect,
        operating=[]
        if operating_threshold is None
        else score_corpus(prepared, profiles, operating_threshold),
        operating_threshold=operating_threshold,
        cv=cross_validate(prepared, profiles) if cv else [],
    )


def _write_result(
    path: Path,
    stamps: np.ndarray,
    values: np.ndarray,
    scores: np.ndarray,
    windows: Sequence[tuple[np.datetime64, np.datetime64]],
) -> None:
    """NAB results format: ``timestamp,value,anomaly_score,label`` (label = in a window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.zeros(len(stamps), dtype=int)
    for lo, hi in window_index_ranges(stamps, windows):
        label[lo : hi + 1] = 1
    text_ts = np.datetime_as_string(stamps, unit="s")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for t, v, s, lab in zip(text_ts, values, scores, label, strict=True):
            w.writerow([str(t).replace("T", " "), repr(float(v)), f"{s:.6g}", int(lab)])


# --------------------------------------------------------------------------- CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``polaris-twin eval nab``."""
    nab = default_nab_dir()
    p.add_argument(
        "--data", type=Path, default=nab / "data", help="NAB data dir with <category>/<file>.csv"
    )
    p.add_argument(
        "--windows",
        type=Path,
        default=nab / "combined_windows.json",
        help="NAB combined_windows.json",
    )
    p.add_argument(
        "--results", type=Path, default=None, help="write NAB result CSVs here (optional)"
    )
    p.add_argument(
        "--profile",
        choices=[pr.name for pr in PROFILES] + list(_ALIASES),
        action="append",
        help="score only these profiles (repeatable; default all three)",
    )
    p.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of tables"
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="DIR",
        help="write one PNG per series here (values, windows, detections, scores; matplotlib)",
    )
    p.add_argument(
        "--cv",
        action="store_true",
        help="also score leave-one-category-out (threshold chosen without the held-out category)",
    )


def _fmt(x: float) -> str:
    return "   n/a" if math.isnan(x) else f"{x:6.1f}"


def format_report(report: NabReport) -> str:
    """Human-readable tables: corpus score per profile, then per-category breakdown."""
    lines = [
        (
            f"NAB: {report.n_files} files, {report.n_points} points, "
            f"detector {report.us_per_point:.1f} us/point (CPU)"
        ),
        "",
        f"{'profile':<20} {'score':>6} {'threshold':>12} {'TP':>4} {'FP':>5} {'FN':>4}",
    ]
    for p in report.profiles:
        lines.append(
            f"{p.profile:<20} {_fmt(p.score)} {p.threshold:12.6f} {p.tp:4d} {p.fp:5d} {p.fn:4d}"
        )
    if report.operating:
        lines += ["", f"at the twin's fixed operating threshold {report.operating_threshold}:"]
        for p in report.operating:
            lines.append(
                f"{p.profile:<20} {_fmt(p.score)} {p.threshold:12.6f} {p.tp:4d} {p.fp:5d} {p.fn:4d}"
            )
    cats = sorted({c for p in report.profiles for c in p.per_category})
    lines += [
        "",
        "per category at the optimised thresholds (normalised score / raw score / FP count)",
    ]
    lines.append(f"{'category':<24}" + "".join(f" {p.profile:>26}" for p in report.profiles))
    for c in cats:
        row = f"{c:<24}"
        for p in report.profiles:
            d = p.per_category.get(c)
            cell = "" if d is None else f"{_fmt(d['score'])} / {d['raw']:7.2f} fp={int(d['fp']):3d}"
            row += f" {cell:>26}"
        lines.append(row)
    if report.cv:
        lines += _format_cv(report)
    return "\n".join(lines)


def _format_cv(report: NabReport) -> list[str]:
    insample = {p.profile: p for p in report.profiles}
    lines = [
        "",
        "leave-one-category-out (threshold chosen on the other categories; in-sample beside it)",
        f"{'profile':<20} {'in-sample':>9} {'CV':>6} {'gap':>6}",
    ]
    for c in report.cv:
        ins = insample[c.profile].score
        lines.append(f"{c.profile:<20} {ins:9.1f} {_fmt(c.score)} {_fmt(ins - c.score)}")
    lines += ["", f"{'held-out category':<24} {'profile':<20} {'in-sample':>9} {'CV':>6} "
              f"{'threshold':>10} {'FP':>4} {'FN':>4}"]
    for c in report.cv:
        for f in c.folds:
            ins = insample[c.profile].per_category.get(f.held_out, {}).get("score", math.nan)
            lines.append(
                f"{f.held_out:<24} {c.profile:<20} {_fmt(ins):>9} {_fmt(f.score)} "
                f"{f.threshold:10.6f} {f.fp:4d} {f.fn:4d}"
            )
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of ``eval nab``: returns a process exit code."""
    data_dir: Path = args.data
    if not data_dir.is_dir() or not Path(args.windows).is_file():
        print(f"NAB data not found: {data_dir} / {args.windows}", file=sys.stderr)
        return 2
    wanted = {_ALIASES.get(name, name) for name in (getattr(args, "profile", None) or [])}
    chosen = [pr for pr in PROFILES if not wanted or pr.name in wanted]
    plot_dir = getattr(args, "plot", None)
    if plot_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "--plot needs matplotlib: pip install 'polaris-digital-twin[plot]'", file=sys.stderr
            )
            return 2
    traces: list[Any] | None = [] if plot_dir is not None else None
    report = evaluate(
        data_dir,
        Path(args.windows),
        args.results,
        profiles=chosen,
        cv=bool(getattr(args, "cv", False)),
        keep=traces,
    )
    if plot_dir is not None and traces is not None:
        from twin.evaluation.nab_plot import plot_all

        thr = report.operating_threshold
        if thr is None:
            thr = report.profiles[0].threshold
        written = plot_all(Path(plot_dir), traces, thr)
        print(f"wrote {len(written)} plots to {plot_dir}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2, default=float))
    else:
        print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m twin.evaluation.nab``: the same command before the CLI wires it."""
    parser = argparse.ArgumentParser(
        prog="python -m twin.evaluation.nab", description=__doc__.splitlines()[0]
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
