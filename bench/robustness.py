"""Benchmark: robustness batteries of the streaming detector on the NAB design set.

Prints (1) the NAB standard score of the corpus under each transform (resampling, noise,
scale/offset, daily-phase shifts, gaps, duplicated timestamps, 4x length with drift), at NAB's
optimised threshold and at the twin's fixed operating threshold, with the change from the
untouched corpus; (2) per injected anomaly class (into normal stretches of the real series),
the detection rate and median delay within the horizon, beside the untouched series' firing
rate over the same spans. Figures only; ``tests/evaluation/test_robustness.py`` asserts them
at smaller size.

    python bench/robustness.py [--only transforms|injections] [--horizon 48] [--per-file 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from twin.evaluation import nab, robustness


def main(argv: list[str] | None = None) -> int:
    """Run the batteries; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    nab_dir = nab.default_nab_dir()
    parser.add_argument("--data", type=Path, default=nab_dir / "data")
    parser.add_argument("--windows", type=Path, default=nab_dir / "combined_windows.json")
    parser.add_argument("--only", choices=["transforms", "injections"], default=None)
    parser.add_argument("--horizon", type=int, default=48, help="points to detect an injection")
    parser.add_argument("--per-file", type=int, default=3, help="injection points per series")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"NAB data not found at {args.data}", file=sys.stderr)
        return 2
    corpus = robustness.load_corpus(args.data, args.windows)
    if args.only in (None, "transforms"):
        t0 = time.perf_counter()
        rows = robustness.transform_battery(corpus)
        print("NAB standard profile under transforms (34 files)")
        print(robustness.format_transforms(rows))
        print(f"({time.perf_counter() - t0:.1f} s)\n")
    if args.only in (None, "injections"):
        t0 = time.perf_counter()
        real = [s for s in corpus if s.name.startswith(("real", "artificialNoAnomaly"))]
        inj = robustness.injection_battery(real, horizon=args.horizon, per_file=args.per_file)
        print(f"injected anomalies in normal stretches of {len(real)} series")
        print(robustness.format_injections(inj, args.horizon))
        print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
