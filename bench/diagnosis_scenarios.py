"""Diagnosis accuracy on generated fault-injection scenarios.

Runs N scenarios (random seeds, every fault kind) through a fresh in-process twin each
(telemetry through the wire decoders and ``TwinRuntime.ingest_points``, execution results
through ``state.apply_execution`` + the model's update, Diagnose through the RPC mapping)
and prints top-1 / top-3 accuracy per fault kind and overall.

    python bench/diagnosis_scenarios.py [--n 100] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import defaultdict

from twin.tools.scenarios import FAULT_KINDS, diagnose_scenario, generate


async def run(n: int, seed: int, verbose: bool) -> dict:
    rng = random.Random(seed)
    seeds = rng.sample(range(1, 1_000_000), n)
    per: dict[str, list[int]] = defaultdict(list)
    misses = []
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        sc = generate(s, kind)
        ranking, _ = await diagnose_scenario(sc)
        rank = ranking.index(sc.root_cause) + 1 if sc.root_cause in ranking else 0
        per[kind].append(rank)
        if rank != 1:
            misses.append({"seed": s, "kind": kind, "root_cause": sc.root_cause, "ranking": ranking[:3], "step": sc.step})
        if verbose:
            print(f"seed={s:7d} {kind:16s} truth={sc.root_cause:6s} rank={rank} top3={ranking[:3]}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    def acc(r: list[int], k: int) -> float:
        return sum(1 for x in r if 0 < x <= k) / len(r) if r else float("nan")
    allr = [x for r in per.values() for x in r]
    return {
        "n": n,
        "elapsed_sec": elapsed,
        "overall": {"top1": acc(allr, 1), "top3": acc(allr, 3)},
        "per_kind": {k: {"n": len(v), "top1": acc(v, 1), "top3": acc(v, 3)} for k, v in sorted(per.items())},
        "misses": misses,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="seed of the seed sequence")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    rep = asyncio.run(run(a.n, a.seed, a.verbose))
    if a.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{'fault kind':<18} {'n':>4} {'top-1':>6} {'top-3':>6}")
    for k, v in rep["per_kind"].items():
        print(f"{k:<18} {v['n']:>4} {v['top1']:6.2f} {v['top3']:6.2f}")
    print(f"{'overall':<18} {a.n:>4} {rep['overall']['top1']:6.2f} {rep['overall']['top3']:6.2f}")
    print(f"{a.n} scenarios in {rep['elapsed_sec']:.1f}s ({rep['elapsed_sec'] / a.n * 1000:.0f} ms each)")
    for m in rep["misses"][:15]:
        print(f"  miss: {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
