"""Diagnosis on random microservice systems (different names, sizes and call graphs).

Each seed draws a new system (``twin.tools.random_systems``: 12-40 services, call depth up
to 6, Nezha-like metrics) with one fault (CPU contention, network delay, errors, memory
leak) plus unrelated distractions; each is diagnosed through the ``eval rca`` path (fresh
twin, RPC mapping). Prints AC@1 / AC@3 / Avg@5 per fault kind. A sanity check of the
mechanisms on systems nobody designed for, not a figure to tune on.

    python bench/diagnosis_random_systems.py [--n 40] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import defaultdict

from twin._proto import digital_twin_pb2 as pb
from twin.core.events import iso
from twin.evaluation.rca import _acc, progress
from twin.evaluation.replay import replay_and_diagnose
from twin.tools.random_systems import KINDS, generate_system


async def run(n: int, seed: int, show: bool) -> dict:
    rng = random.Random(seed)
    seeds = rng.sample(range(1, 1_000_000), n)
    per: dict[str, list[int]] = defaultdict(list)
    sizes = []
    t0 = time.perf_counter()
    items = list(enumerate(seeds))
    for i, s in progress(items, len(items), "random systems") if show else items:
        rs = generate_system(s, KINDS[i % len(KINDS)])
        sizes.append(len(rs.services))
        pts = rs.points
        chunks = [pts[j : j + 5000] for j in range(0, len(pts), 5000)]
        req = pb.DiagnosisRequest(diagnosis_id=f"rs-{s}", timestamp=iso(rs.fault_t))
        out = await replay_and_diagnose(chunks, req)
        per[rs.kind].append(
            out.ranking.index(rs.root_cause) + 1 if rs.root_cause in out.ranking else 0
        )
    allr = [r for v in per.values() for r in v]
    return {
        "n": n,
        "services": {"min": min(sizes), "max": max(sizes), "mean": sum(sizes) / len(sizes)},
        "overall": _acc(allr),
        "per_kind": {k: _acc(v) for k, v in sorted(per.items())},
        "elapsed_sec": time.perf_counter() - t0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rep = asyncio.run(run(a.n, a.seed, not a.json))
    if a.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{'fault kind':<12} {'n':>4} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6}")
    for k, v in rep["per_kind"].items():
        print(f"{k:<12} {v['n']:>4} {v['AC@1']:6.2f} {v['AC@3']:6.2f} {v['Avg@5']:6.2f}")
    o = rep["overall"]
    print(f"{'overall':<12} {o['n']:>4} {o['AC@1']:6.2f} {o['AC@3']:6.2f} {o['Avg@5']:6.2f}")
    sz = rep["services"]
    print(
        f"{a.n} systems of {sz['min']}-{sz['max']} services (mean {sz['mean']:.0f}) in "
        f"{rep['elapsed_sec']:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
