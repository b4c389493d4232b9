"""Diagnosis robustness battery: the Nezha design cases under degraded inputs.

Missing metrics for some services, 2x and 1/2x sampling, clock skew between services
(±half a step, ±1.5 steps) and a noisy neighbour that is not the cause
(``twin.evaluation.rca_robustness``). Each case is diagnosed through the ``eval rca`` path,
clean and transformed; the table gives AC@1 / AC@3 / Avg@5, the loss against the clean
run and the stated loss budget.

    python bench/diagnosis_robustness.py [--cases DIR] [--limit N] [--only missing,skew] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from twin.evaluation import rca
from twin.evaluation.rca_robustness import TRANSFORMS, run_battery


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path, default=rca.default_rca_dir())
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated transforms (default: all)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    names = [n for n in a.only.split(",") if n] or list(TRANSFORMS)
    dirs = rca.list_cases(a.cases, a.limit)
    t0 = time.perf_counter()
    rep = asyncio.run(run_battery(dirs, names, None if a.json else rca.progress))
    elapsed = time.perf_counter() - t0
    if a.json:
        print(json.dumps({**rep, "elapsed_sec": elapsed}, indent=2))
        return 0
    c = rep["clean"]
    print(
        f"{'input':<16} {'n':>4} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6}   {'loss AC@1':>9} "
        f"{'loss Avg@5':>10}  budget     ok"
    )
    print(f"{'clean':<16} {c['n']:>4} {c['AC@1']:6.2f} {c['AC@3']:6.2f} {c['Avg@5']:6.2f}")
    for n, r in rep["transforms"].items():
        b = r["budget"]
        print(
            f"{n:<16} {r['n']:>4} {r['AC@1']:6.2f} {r['AC@3']:6.2f} {r['Avg@5']:6.2f}   "
            f"{r['loss_AC@1']:+9.2f} {r['loss_Avg@5']:+10.2f}"
            f"  {b[0]:.2f}/{b[1]:.2f}  {'yes' if r['within'] else 'NO'}"
        )
    print(f"{c['n']} cases x {len(names) + 1} inputs in {elapsed:.0f}s")
    return 0 if all(r["within"] for r in rep["transforms"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
