"""``eval nab --plot DIR``: one PNG per series (values, label windows, detections, scores).

matplotlib is an optional extra (``pip install -e '.[plot]'``); a progress bar comes from tqdm
when it is installed (extra ``tools``), else a plain counter on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["SeriesTrace", "plot_all", "plot_series"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeriesTrace:
    """What the plot shows of one series (kept by ``evaluate`` when plotting)."""

    name: str
    stamps: np.ndarray
    values: np.ndarray
    scores: np.ndarray
    windows: Sequence[tuple[Any, Any]]
    window_ranges: Sequence[tuple[int, int]] = ()  # index ranges of the windows (nab computes them)
    probation: int = 0  # points of NAB's probationary period


def _progress(items: Sequence[T], desc: str) -> Iterator[T]:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the tools extra
        for i, item in enumerate(items, 1):
            print(f"\r{desc}: {i}/{len(items)}", end="", file=sys.stderr, flush=True)
            yield item
        print(file=sys.stderr)
        return
    yield from tqdm(items, desc=desc, unit="series", file=sys.stderr)


def plot_series(path: Path, trace: SeriesTrace, threshold: float) -> None:
    """Write one PNG: values with windows and detections above, surprise of the score below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = trace.stamps
    if not np.issubdtype(x.dtype, np.datetime64):
        x = np.asarray(x, dtype="float64").astype("int64").astype("datetime64[s]")
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    top.plot(x, trace.values, lw=0.6, color="#1f4e79", label="value")
    for k, (lo, hi) in enumerate(trace.window_ranges):
        if hi >= lo:
            top.axvspan(x[lo], x[hi], color="#f4b183", alpha=0.45, lw=0,
                        label="labelled window" if k == 0 else None)
    p = trace.probation
    if p > 0:
        top.axvspan(x[0], x[p - 1], color="#d9d9d9", alpha=0.5, lw=0, label="probation")
    det = np.nonzero(trace.scores >= threshold)[0]
    if det.size:
        top.scatter(x[det], trace.values[det], s=22, color="#c00000", zorder=3,
                    label=f"detection ({det.size})")
    top.set_title(trace.name, fontsize=10)
    top.legend(loc="upper left", fontsize=7, ncol=4)
    surprise = -np.log10(np.clip(1.0 - trace.scores, 1e-12, 1.0))
    bottom.plot(x, surprise, lw=0.6, color="#404040")
    bottom.axhline(-np.log10(max(1.0 - threshold, 1e-12)), color="#c00000", lw=0.8, ls="--")
    bottom.set_ylabel("-log10(1 - score)", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_all(out_dir: Path, traces: Iterable[SeriesTrace], threshold: float) -> list[Path]:
    """One PNG per series under ``out_dir/<category>/<file>.png``; returns the paths."""
    items = list(traces)
    written = []
    for tr in _progress(items, "plotting"):
        path = out_dir / (tr.name.rsplit(".", 1)[0] + ".png")
        plot_series(path, tr, threshold)
        written.append(path)
    return written
