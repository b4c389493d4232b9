"""Benchmark: NAB score and per-point cost of the statistical world model's detector.

Runs the full ``eval nab`` pipeline on the NAB data (``$POLARIS_NAB_DIR`` or
``<repo>/../shared/nab``), prints the score tables, then times ``update`` point by point
over the whole corpus. Figures only, no assertions.

    python bench/nab_eval.py [--results DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from twin.evaluation import nab
from twin.models.statistical.anomaly import DEFAULT_THRESHOLD, StreamingAnomalyDetector


def _time_updates(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, int]:
    """Wall and CPU seconds spent in ``update`` over every series (fresh detector each).

    CPU (thread) time is reported too because the benchmark machine is shared: wall time
    inflates with other load, CPU time much less.
    """
    wall = cpu = 0.0
    points = 0
    for epoch, values in series:
        det = StreamingAnomalyDetector()
        update = det.update
        ts, vs = epoch.tolist(), values.tolist()
        c0, t0 = time.thread_time(), time.perf_counter()
        for t, v in zip(ts, vs, strict=True):
            update(t, v)
        wall += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        points += len(vs)
    return wall, cpu, points


def _steady_state_cpu(n: int = 40_000, skip: int = 8_000) -> float:
    """CPU us/point once every window is full (NAB files are barely longer than one)."""
    rng = np.random.default_rng(0)
    values = (10.0 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 1, n)).tolist()
    stamps = (300.0 * np.arange(n)).tolist()
    update = StreamingAnomalyDetector().update
    for i in range(skip):
        update(stamps[i], values[i])
    c0 = time.thread_time()
    for i in range(skip, n):
        update(stamps[i], values[i])
    return 1e6 * (time.thread_time() - c0) / (n - skip)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    nab_dir = nab.default_nab_dir()
    parser.add_argument("--data", type=Path, default=nab_dir / "data")
    parser.add_argument("--windows", type=Path, default=nab_dir / "combined_windows.json")
    parser.add_argument("--results", type=Path, default=None, help="keep the NAB result files here")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timing repetitions (median reported)"
    )
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"NAB data not found at {args.data}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = nab.evaluate(args.data, args.windows, args.results or Path(tmp))
    wall = time.perf_counter() - t0
    print(nab.format_report(report))
    print(f"\nDEFAULT_THRESHOLD = {DEFAULT_THRESHOLD}")
    print(f"full evaluation (detect + write results + score): {wall:.2f} s")

    series = []
    for name in nab.discover_files(args.data):
        stamps, values = nab.load_series(args.data / name)
        series.append((stamps.astype("int64").astype(float), values))
    runs = [_time_updates(series) for _ in range(max(args.repeat, 1))]
    points = runs[0][2]
    wall_us = [1e6 * w / points for w, _, _ in runs]
    cpu_us = [1e6 * c / points for _, c, _ in runs]
    print(
        f"update() on NAB: {statistics.median(cpu_us):.2f} us/point CPU, "
        f"{statistics.median(wall_us):.2f} us/point wall (median of {len(runs)} runs; "
        f"{points} points, {len(series)} series)"
    )
    steady = statistics.median(_steady_state_cpu() for _ in range(max(args.repeat, 1)))
    print(f"update() steady state (all windows full, 32k points): {steady:.2f} us/point CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
