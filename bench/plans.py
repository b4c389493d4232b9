"""Plans and predictions against the exemplar simulators (issue 11, "Proving it").

Per system (``swim``: SWIM-like web tier; ``switch``: SWITCH-like ML inference;
``checkout``: Kubernetes-style microservice with non-SWIM names), for every seed:

1. what-if error: predicted mean latency after an action vs the simulator, at target
   utilisations after the action (goal <= 10 % up to 0.9); also p95 for ``checkout``;
2. plan choice: random situations x 5 candidate plans (+ "do nothing"), one compare
   call each; the twin's best vs the simulator's best (goal >= 90 %), regret (goal
   <= 5 % of utility: total regret / total |best utility|); and the ceiling: how often a
   second, independent run of the simulator (same situation, other random draws) has the
   same best plan as the first, which bounds any predictor's match rate;
3. coverage of 90 % forecast intervals of load, latency and utilisation (goal 85-95 %);
4. learned effects: error of the learned effect after 1, 3, 5, 10 executions of an action
   without a structural model (goal <= 15 % after 5), and the what-if with it.

Spread over seeds is printed as mean [min, max]. The generator draws every hidden
parameter per situation; nothing is tuned to one seed.

    python bench/plans.py                       # 3 seeds x 100 situations (slow: ~30 min)
    python bench/plans.py --seeds 1 --situations 20 --jobs 2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.tools.exemplars import experiments as X  # noqa: E402

UTILS = (0.3, 0.5, 0.7, 0.8, 0.9)


def _whatif(system: str, seed: int) -> list[Any]:
    return asyncio.run(X.whatif_errors(system, seed, UTILS))


def _choice(system: str, seed: int) -> Any:
    return asyncio.run(X.plan_choice(system, seed))


def _coverage(system: str, seed: int) -> tuple[int, int]:
    return asyncio.run(X.forecast_coverage(system, seed))


def _effects(system: str, seed: int) -> list[Any]:
    return asyncio.run(X.learned_effect_errors(system, seed, (1, 3, 5, 10)))


def spread(values: list[float], fmt: Callable[[float], str] = lambda v: f"{v:.1%}") -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{fmt(float(np.mean(vals)))} [{fmt(min(vals))}, {fmt(max(vals))}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--situations", type=int, default=100, help="plan-choice situations per system and seed"
    )
    p.add_argument("--systems", nargs="+", default=list(X.SYSTEM_NAMES), choices=X.SYSTEM_NAMES)
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["whatif", "choice", "coverage", "effects"]
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None

    def run(fn: Callable[..., Any], tasks: list[tuple[Any, ...]]) -> list[Any]:
        if pool is None:
            return [fn(*t) for t in tasks]
        return list(pool.map(fn, *zip(*tasks)))

    print(
        f"plans vs simulators: systems {', '.join(args.systems)}; seeds {args.seeds}; spread = "
        "mean [min, max] over seeds\n"
    )
    if "whatif" not in args.skip:
        print(
            "1. what-if error vs the simulator after an action: mean |error| of mean latency (p95 "
            "for checkout), by utilisation after the action"
        )
        print(f"{'system':<9} {'util':>5}  {'mean |err|':<28} {'max |err|':<28} {'p95 |err|':<28}")
        for system in args.systems:
            per_seed = run(_whatif, [(system, s) for s in args.seeds])
            for u in UTILS:
                means = [
                    float(np.mean([abs(c.error) for c in cases if c.utilization == u]))
                    for cases in per_seed
                    if any(c.utilization == u for c in cases)
                ]
                maxes = [
                    float(np.max([abs(c.error) for c in cases if c.utilization == u]))
                    for cases in per_seed
                    if any(c.utilization == u for c in cases)
                ]
                tails = [
                    float(
                        np.mean(
                            [
                                abs(c.tail_error)
                                for c in cases
                                if c.utilization == u and math.isfinite(c.tail_error)
                            ]
                        )
                    )
                    for cases in per_seed
                    if any(c.utilization == u and math.isfinite(c.tail_error) for c in cases)
                ]
                print(
                    f"{system:<9} {u:5.2f}  {spread(means):<28} {spread(maxes):<28} "
                    f"{spread(tails) if tails else '':<28}"
                )
        print()
    if "choice" not in args.skip:
        print(
            f"2. plan choice: {args.situations} random situations x 5 candidates (+ do nothing) "
            "per system and seed"
        )
        print(
            f"{'system':<9} {'best = simulator best':<28} {'within 1% of stake':<28} "
            f"{'regret / |best utility|':<28} {'median regret':<24} "
            f"{'simulator = itself (ceiling)':<28}"
        )
        for system in args.systems:
            matches, nears, regrets, medians, ceilings = [], [], [], [], []
            for seed in args.seeds:
                results = run(
                    _choice, [(system, seed * 100_000 + i) for i in range(args.situations)]
                )
                matches.append(float(np.mean([r.match for r in results])))
                nears.append(float(np.mean([r.match or r.tie for r in results])))
                regrets.append(
                    sum(r.regret for r in results)
                    / max(sum(abs(r.best_utility) for r in results), 1e-12)
                )
                medians.append(float(np.median([r.regret_share for r in results])))
                ceilings.append(float(np.mean([r.replicate_best == r.true_best for r in results])))
            print(
                f"{system:<9} {spread(matches):<28} {spread(nears):<28} {spread(regrets):<28} "
                f"{spread(medians):<24} {spread(ceilings):<28}"
            )
        print()
    if "coverage" not in args.skip:
        print(
            "3. coverage of 90 % forecast intervals (load, latency, utilisation; 3 origins x 20 "
            "min per seed; the model as it is)"
        )
        for system in args.systems:
            res = run(_coverage, [(system, s) for s in args.seeds])
            cov = [i / t for i, t in res if t]
            print(f"{system:<9} {spread(cov)}  ({sum(t for _, t in res)} points)")
        print()
    if "effects" not in args.skip:
        print(
            "4. learned effects: |learned - true| / |true| of the service-time change (quality "
            "change for switch), and the what-if with it"
        )
        print(
            f"{'system':<9} {'n':>3}  {'service effect':<28} {'quality effect':<28} "
            f"{'what-if |err|':<28}"
        )
        for system in args.systems:
            per_seed = run(_effects, [(system, s) for s in args.seeds])
            for n in (1, 3, 5, 10):
                pts = [next(p for p in pts if p.n == n) for pts in per_seed]
                q = [p.quality_error for p in pts]
                print(
                    f"{system:<9} {n:>3}  {spread([p.service_error for p in pts]):<28} "
                    f"{spread(q) if any(math.isfinite(v) for v in q) else '':<28} "
                    f"{spread([abs(p.whatif_error) for p in pts]):<28}"
                )
        print()
    if pool is not None:
        pool.shutdown()
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
