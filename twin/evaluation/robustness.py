"""Robustness batteries for the streaming detector: transformed NAB corpora and injected anomalies.

A detector that generalises should not care whether a series is sampled twice as fast, shifted
by a few hours, rescaled, noisier, has holes or repeated timestamps, or runs for weeks with a
slow drift. :func:`transform_battery` re-scores the NAB corpus under each such transform and
reports the change against the untouched corpus, at NAB's optimised threshold and at the twin's
fixed operating threshold (the one that matters in production: no re-tuning per transform).

:func:`injection_battery` injects the anomaly classes operators meet (spike, dip, level shift,
variance change, trend change, missing seasonality, stuck value, flatline to zero) into the
normal stretches of real NAB series (points outside every labelled window, with a margin) and
reports, per class, the detection rate and delay within a horizon, beside the rate at which the
detector fires in the same span of the untouched series (the false-detection baseline).

Both print from ``bench/robustness.py``; tests run them on a few files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.evaluation import nab

__all__ = [
    "INJECTIONS",
    "TRANSFORMS",
    "InjectionResult",
    "Series",
    "TransformResult",
    "injection_battery",
    "load_corpus",
    "transform_battery",
]

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Series:
    """One labelled series: epoch seconds, values and windows as ``(start, end)`` epochs."""

    name: str
    t: np.ndarray
    v: np.ndarray
    windows: tuple[tuple[float, float], ...]

    @property
    def step(self) -> float:
        """Median sampling step in seconds."""
        d = np.diff(self.t)
        return float(np.median(d)) if d.size else 300.0


def load_corpus(
    data_dir: Path, windows_file: Path, files: Sequence[str] | None = None
) -> list[Series]:
    """Read NAB files as :class:`Series` (epoch seconds)."""
    windows = nab.load_windows(windows_file)
    names = list(files) if files is not None else nab.discover_files(data_dir)
    out = []
    for name in names:
        stamps, values = nab.load_series(data_dir / name)
        wins = tuple(
            (float(a.astype("int64")), float(b.astype("int64"))) for a, b in windows.get(name, [])
        )
        out.append(Series(name, stamps.astype("int64").astype(float), values, wins))
    return out


def _spread(v: np.ndarray) -> float:
    """Robust scale of a series: its 1-99 % range (never 0)."""
    lo, hi = np.quantile(v, (0.01, 0.99))
    r = float(hi - lo)
    return r if r > 0 else max(float(np.std(v)), abs(float(np.mean(v))) * 1e-3, 1e-9)


def _outside_windows(s: Series, margin: float = 0.0) -> np.ndarray:
    ok = np.ones(len(s.t), dtype=bool)
    for a, b in s.windows:
        ok &= ~((s.t >= a - margin) & (s.t <= b + margin))
    return ok


# --------------------------------------------------------------------------- transforms


def _resample_up(s: Series, rng: np.random.Generator) -> Series:
    """2x: a linearly interpolated point between every two samples."""
    t = np.empty(2 * len(s.t) - 1)
    v = np.empty_like(t)
    t[0::2], v[0::2] = s.t, s.v
    t[1::2] = np.floor((s.t[:-1] + s.t[1:]) / 2)
    v[1::2] = (s.v[:-1] + s.v[1:]) / 2
    return Series(s.name, t, v, s.windows)


def _resample_down(s: Series, rng: np.random.Generator) -> Series:
    """1/2x: every other sample (keeps the first; a single-point spike may be lost)."""
    return Series(s.name, s.t[0::2], s.v[0::2], s.windows)


def _resample_down_mean(s: Series, rng: np.random.Generator) -> Series:
    """1/2x by averaging pairs (what a slower scrape of an averaged metric reports)."""
    m = len(s.t) // 2 * 2
    v = (s.v[0:m:2] + s.v[1:m:2]) / 2
    return Series(s.name, s.t[1:m:2], v, s.windows)


def _noise(s: Series, rng: np.random.Generator) -> Series:
    """Additive Gaussian noise of 2 % of the series' 1-99 % range."""
    return Series(s.name, s.t, s.v + rng.normal(0.0, 0.02 * _spread(s.v), len(s.v)), s.windows)


def _scale_offset(s: Series, rng: np.random.Generator) -> Series:
    """``-37.5 * v + 1e4``: a unit change, a sign flip and an offset at once."""
    return Series(s.name, s.t, -37.5 * s.v + 1e4, s.windows)


def _shift(hours: float) -> Callable[[Series, np.random.Generator], Series]:
    def f(s: Series, rng: np.random.Generator) -> Series:
        d = hours * 3600.0
        return Series(s.name, s.t + d, s.v, tuple((a + d, b + d) for a, b in s.windows))

    f.__doc__ = f"Timestamps (and windows) shifted by {hours:g} h: another daily phase."
    return f


def _gaps(s: Series, rng: np.random.Generator) -> Series:
    """Ten holes of 1 % of the series each, outside the labelled windows."""
    keep = np.ones(len(s.t), dtype=bool)
    free = _outside_windows(s, margin=0.0)
    width = max(len(s.t) // 100, 1)
    for _ in range(10):
        for _try in range(20):
            i = int(rng.integers(0, max(len(s.t) - width, 1)))
            if free[i : i + width].all():
                keep[i : i + width] = False
                break
    return Series(s.name, s.t[keep], s.v[keep], s.windows)


def _duplicates(s: Series, rng: np.random.Generator) -> Series:
    """10 % of the points delivered twice (same timestamp and value)."""
    reps = np.where(rng.random(len(s.t)) < 0.1, 2, 1)
    return Series(s.name, np.repeat(s.t, reps), np.repeat(s.v, reps), s.windows)


def _long_with(drift_ranges: float) -> Callable[[Series, np.random.Generator], Series]:
    def f(s: Series, rng: np.random.Generator) -> Series:
        step = s.step
        span = float(s.t[-1] - s.t[0]) + step
        t = np.concatenate([s.t + k * span for k in range(4)])
        drift = drift_ranges * _spread(s.v) * (t - t[0]) / (4 * span)
        v = np.tile(s.v, 4) + drift
        wins = tuple((a + k * span, b + k * span) for k in range(4) for a, b in s.windows)
        return Series(s.name, t, v, wins)

    f.__doc__ = (
        "4x concatenation, timestamps continuing, with a linear drift of "
        f"{drift_ranges:g}x the 1-99 % range overall (each anomaly recurs one file later)."
    )
    return f


#: name -> transform; each is a pure function of the series (and a seeded generator).
TRANSFORMS: dict[str, Callable[[Series, np.random.Generator], Series]] = {
    "resample_2x": _resample_up,
    "resample_half": _resample_down,
    "resample_half_mean": _resample_down_mean,
    "noise_2pct": _noise,
    "scale_offset": _scale_offset,
    "shift_6h": _shift(6.0),
    "shift_13h": _shift(13.0),
    "gaps": _gaps,
    "duplicates": _duplicates,
    "long_4x": _long_with(0.0),
    "long_4x_drift": _long_with(1.0),
}


@dataclass(frozen=True, slots=True)
class TransformResult:
    """Standard-profile scores of one transformed corpus (and the change from the original)."""

    name: str
    score: float
    score_fixed: float
    delta: float
    delta_fixed: float
    fp: int
    fn: int


def _scores(report: nab.NabReport) -> tuple[float, float, int, int]:
    std = report.profiles[0]
    fixed = report.operating[0].score if report.operating else math.nan
    return std.score, fixed, std.fp, std.fn


def score_corpus(
    corpus: Iterable[Series], score_fn: ScoreFn | None = None, threshold: float | None = None
) -> nab.NabReport:
    """NAB report (standard profile) of in-memory series."""
    return nab.evaluate_series(
        ((s.name, s.t, s.v, s.windows) for s in corpus),
        score_fn=score_fn,
        profiles=[nab.PROFILES[0]],
        operating_threshold=threshold,
    )


def transform_battery(
    corpus: Sequence[Series],
    score_fn: ScoreFn | None = None,
    threshold: float | None = None,
    transforms: Iterable[str] | None = None,
    seed: int = 0,
) -> list[TransformResult]:
    """Score the corpus untouched (first row, ``original``) and under each transform."""
    base = _scores(score_corpus(corpus, score_fn, threshold))
    rows = [TransformResult("original", base[0], base[1], 0.0, 0.0, base[2], base[3])]
    for name in transforms or TRANSFORMS:
        fn = TRANSFORMS[name]
        rng = np.random.default_rng(seed)
        moved = [fn(s, rng) for s in corpus]
        sc = _scores(score_corpus(moved, score_fn, threshold))
        rows.append(
            TransformResult(name, sc[0], sc[1], sc[0] - base[0], sc[1] - base[1], sc[2], sc[3])
        )
    return rows


# --------------------------------------------------------------------------- injections


def _seasonal(v: np.ndarray, per_day: int) -> bool:
    """Clearly daily-periodic: lag-one-day autocorrelation above 0.5."""
    if per_day < 4 or len(v) < 3 * per_day:
        return False
    a, b = v[per_day:] - v[per_day:].mean(), v[:-per_day] - v[:-per_day].mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return den > 0 and float(a @ b) / den > 0.5


def _local_sd(v: np.ndarray, i: int, n: int = 500) -> float:
    """Robust standard deviation of the ``n`` points before ``i`` (MAD, floored)."""
    w = v[max(0, i - n) : i]
    mad = float(np.median(np.abs(w - np.median(w))))
    sd = 1.4826 * mad
    return max(sd, 0.05 * _spread(v[:i]), 1e-9)


Injector = Callable[[np.ndarray, int, int, float, int], np.ndarray | None]


def _spike(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray:
    out = v.copy()
    out[i] += 8.0 * sd
    return out


def _dip(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray:
    out = v.copy()
    out[i] -= 8.0 * sd
    if v.min() >= 0.0:
        out[i] = max(out[i], 0.0)
    return out


def _level(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray:
    out = v.copy()
    out[i:] += 5.0 * sd
    return out


def _variance(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray:
    out = v.copy()
    rng = np.random.default_rng(i)
    out[i:] += rng.normal(0.0, 4.0 * sd, len(v) - i)
    return out


def _trend(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray:
    out = v.copy()
    out[i:] += 8.0 * sd * np.arange(len(v) - i) / h
    return out


def _no_season(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray | None:
    if not _seasonal(v[:i], per_day):
        return None
    out = v.copy()
    level = float(np.mean(v[i - per_day : i]))
    k = max(per_day // 24, 1)  # keep the short-term noise, drop the daily cycle
    smooth = np.convolve(v, np.ones(k) / k, mode="same")
    out[i:] = level + (v[i:] - smooth[i:])
    return out


def _stuck(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray | None:
    if np.ptp(v[i - 50 : i]) == 0.0:
        return None  # already flat there: nothing to inject
    out = v.copy()
    out[i:] = v[i - 1]
    return out


def _zero(v: np.ndarray, i: int, h: int, sd: float, per_day: int) -> np.ndarray | None:
    if np.mean(np.abs(v[i - 50 : i]) < 1e-9) > 0.1:
        return None  # already often zero there
    out = v.copy()
    out[i:] = 0.0
    return out


#: name -> injector(values, index, horizon, local sd, points per day) -> new values or None.
INJECTIONS: dict[str, Injector] = {
    "spike": _spike,
    "dip": _dip,
    "level_shift": _level,
    "variance_change": _variance,
    "trend_change": _trend,
    "missing_seasonality": _no_season,
    "stuck_value": _stuck,
    "flatline_zero": _zero,
}


@dataclass(slots=True)
class InjectionResult:
    """Per-class outcome over every (series, injection point) tried."""

    name: str
    n: int = 0
    detected: int = 0
    baseline_fired: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Fraction of injections detected within the horizon."""
        return self.detected / self.n if self.n else math.nan

    @property
    def baseline_rate(self) -> float:
        """Fraction of the same spans where the untouched series fires (false detections)."""
        return self.baseline_fired / self.n if self.n else math.nan

    @property
    def median_delay(self) -> float:
        """Median points from the injection to the first detection."""
        return float(np.median(self.delays)) if self.delays else math.nan


def injection_points(s: Series, horizon: int, per_file: int, min_history: int) -> list[int]:
    """Indices in normal stretches: no labelled window from ``i - 100`` to ``i + horizon``."""
    free = _outside_windows(s, margin=0.0)
    n = len(s.t)
    ok = []
    for i in range(min_history, n - horizon):
        if free[max(0, i - 100) : i + horizon].all():
            ok.append(i)
    if not ok:
        return []
    picks = np.linspace(0, len(ok) - 1, per_file + 2)[1:-1]
    return sorted({ok[int(round(p))] for p in picks})


def injection_battery(
    corpus: Sequence[Series],
    score_fn: ScoreFn | None = None,
    threshold: float | None = None,
    horizon: int = 48,
    per_file: int = 2,
    min_history: int = 800,
    classes: Iterable[str] | None = None,
) -> list[InjectionResult]:
    """Inject each class at ``per_file`` normal points of every series; detect within ``horizon``.

    The series is cut at ``i + horizon``; detection is the first score ``>= threshold`` in
    ``[i, i + horizon)``. The untouched series' scores over the same span give the baseline.
    """
    from twin.models.statistical.anomaly import DEFAULT_THRESHOLD, StreamingAnomalyDetector

    thr = DEFAULT_THRESHOLD if threshold is None else threshold

    def default_fn(t: np.ndarray, v: np.ndarray) -> np.ndarray:
        return StreamingAnomalyDetector().score_batch(t, v)

    fn = score_fn or default_fn
    names = list(classes or INJECTIONS)
    results = {c: InjectionResult(c) for c in names}
    for s in corpus:
        if len(s.t) < min_history + horizon + 1:
            continue
        per_day = int(round(DAY / s.step))
        base = fn(s.t, s.v)
        for i in injection_points(s, horizon, per_file, min_history):
            end = i + horizon
            sd = _local_sd(s.v, i)
            base_fired = bool(np.any(base[i:end] >= thr))
            for c in names:
                v = INJECTIONS[c](s.v[:end], i, horizon, sd, per_day)
                if v is None:
                    continue
                r = results[c]
                r.n += 1
                r.baseline_fired += base_fired
                sc = fn(s.t[:end], v)
                hit = np.nonzero(sc[i:end] >= thr)[0]
                if hit.size:
                    r.detected += 1
                    r.delays.append(int(hit[0]))
    return [results[c] for c in names]


def format_transforms(rows: Sequence[TransformResult]) -> str:
    """Table of :func:`transform_battery` rows."""
    lines = [
        f"{'transform':<18} {'std (opt)':>9} {'change':>7} {'std (fixed)':>11} {'change':>7} "
        f"{'FP':>4} {'FN':>4}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<18} {r.score:9.1f} {r.delta:+7.1f} {r.score_fixed:11.1f} "
            f"{r.delta_fixed:+7.1f} {r.fp:4d} {r.fn:4d}"
        )
    return "\n".join(lines)


def format_injections(rows: Sequence[InjectionResult], horizon: int) -> str:
    """Table of :func:`injection_battery` rows."""
    lines = [
        f"{'class':<20} {'n':>4} {'detected':>8} {'median delay':>12} "
        f"{'baseline fires':>14}   (within {horizon} points)"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<20} {r.n:4d} {r.rate:8.2f} {r.median_delay:12.1f} {r.baseline_rate:14.2f}"
        )
    return "\n".join(lines)
