"""Diagnosis accuracy on generated fault-injection scenarios, and the "no incident" answer.

Runs N scenarios (random seeds, every fault kind) plus N/5 healthy ones (no fault) through
a fresh in-process twin each (telemetry through the wire decoders and
``TwinRuntime.ingest_points``, execution results through ``state.apply_execution`` + the
model's update, Diagnose through the RPC mapping: ``twin.evaluation.replay``) and prints
top-1 / top-3 accuracy per fault kind and overall, and the probability of the "no
incident" answer on faulty and on healthy scenarios.

    python bench/diagnosis_scenarios.py [--n 100] [--seed 0] [--healthy N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from typing import Any

from twin.evaluation.replay import NO_INCIDENT_PREFIX
from twin.tools.scenarios import FAULT_KINDS, NO_FAULT, diagnose_scenario, generate


def _no_incident(resp: Any) -> tuple[float | None, bool]:
    """(probability of the "no incident" hypothesis, whether it is the top answer)."""
    p = None
    for h in resp.hypotheses:
        if h.hypothesis.lower().startswith(NO_INCIDENT_PREFIX):
            p = float(h.probability)
    top = bool(resp.hypotheses) and min(
        resp.hypotheses, key=lambda h: h.rank
    ).hypothesis.lower().startswith(NO_INCIDENT_PREFIX)
    return p, top


async def run(n: int, seed: int, healthy: int, verbose: bool) -> dict:
    rng = random.Random(seed)
    seeds = rng.sample(range(1, 1_000_000), n + healthy)
    per: dict[str, list[int]] = defaultdict(list)
    none_p: dict[str, list[float]] = {"faulty": [], "healthy": []}
    none_top: dict[str, list[bool]] = {"faulty": [], "healthy": []}
    misses = []
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)] if i < n else NO_FAULT
        sc = generate(s, kind)
        ranking, resp = await diagnose_scenario(sc)
        p, top = _no_incident(resp)
        group = "healthy" if kind == NO_FAULT else "faulty"
        if p is not None:
            none_p[group].append(p)
        none_top[group].append(top)
        if kind == NO_FAULT:
            if verbose:
                print(f"seed={s:7d} healthy          p(no incident)={p} top={top}", file=sys.stderr)
            continue
        rank = ranking.index(sc.root_cause) + 1 if sc.root_cause in ranking else 0
        per[kind].append(rank)
        if rank != 1:
            misses.append(
                {
                    "seed": s,
                    "kind": kind,
                    "root_cause": sc.root_cause,
                    "ranking": ranking[:3],
                    "step": sc.step,
                }
            )
        if verbose:
            print(
                f"seed={s:7d} {kind:16s} truth={sc.root_cause:6s} rank={rank} "
                f"top3={ranking[:3]} p(no incident)={p}",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - t0

    def acc(r: list[int], k: int) -> float:
        return sum(1 for x in r if 0 < x <= k) / len(r) if r else float("nan")

    def mean(x: list[float] | list[bool]) -> float:
        return sum(float(v) for v in x) / len(x) if x else float("nan")

    allr = [x for r in per.values() for x in r]
    return {
        "n": n,
        "healthy": healthy,
        "elapsed_sec": elapsed,
        "overall": {"top1": acc(allr, 1), "top3": acc(allr, 3)},
        "per_kind": {
            k: {"n": len(v), "top1": acc(v, 1), "top3": acc(v, 3)} for k, v in sorted(per.items())
        },
        "no_incident": {
            g: {
                "n": len(none_top[g]),
                "mean_probability": mean(none_p[g]),
                "answered_first": mean(none_top[g]),
            }
            for g in none_p
        },
        "misses": misses,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="faulty scenarios")
    p.add_argument("--healthy", type=int, default=None, help="healthy scenarios (default: n / 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the seed sequence")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    healthy = a.n // 5 if a.healthy is None else a.healthy
    rep = asyncio.run(run(a.n, a.seed, healthy, a.verbose))
    if a.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{'fault kind':<18} {'n':>4} {'top-1':>6} {'top-3':>6}")
    for k, v in rep["per_kind"].items():
        print(f"{k:<18} {v['n']:>4} {v['top1']:6.2f} {v['top3']:6.2f}")
    print(f"{'overall':<18} {a.n:>4} {rep['overall']['top1']:6.2f} {rep['overall']['top3']:6.2f}")
    print(f"\n{'no incident':<18} {'n':>4} {'mean p':>6} {'first':>6}")
    for g, v in rep["no_incident"].items():
        print(f"{g:<18} {v['n']:>4} {v['mean_probability']:6.2f} {v['answered_first']:6.2f}")
    total = a.n + healthy
    print(
        f"{total} scenarios in {rep['elapsed_sec']:.1f}s "
        f"({rep['elapsed_sec'] / max(total, 1) * 1000:.0f} ms each)"
    )
    for m in rep["misses"][:15]:
        print(f"  miss: {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
