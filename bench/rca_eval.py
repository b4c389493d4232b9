"""Root-cause accuracy on the Nezha Online Boutique cases (the ``eval rca`` path), plus
a check that the score holds on each day separately (a crude overfitting guard) and the
calibration of the hypothesis probabilities (mean top probability vs. AC@1, log loss).

    python bench/rca_eval.py [--cases DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path

from twin.evaluation import rca
from twin.evaluation.replay import service_of


async def collect(dirs: list[Path]) -> list[dict]:
    out = []
    for d in dirs:
        case = rca.load_case_input(d)
        ranking, resp = await rca.diagnose_case(case)
        probs = {service_of(h): h.probability for h in resp.hypotheses}
        out.append({"case_id": case.case_id, "ranking": ranking, "probs": probs})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path, default=rca.default_rca_dir())
    a = p.parse_args()
    dirs = rca.list_cases(a.cases)
    t0 = time.perf_counter()
    res = asyncio.run(collect(dirs))
    elapsed = time.perf_counter() - t0
    labels = {d.name: rca.load_labels(d) for d in dirs}
    rep = rca.score(res, labels)
    print(rca.format_report(rep, elapsed))
    days = sorted({r["case_id"].split("_")[0] for r in res})
    print("\nper day (split-half stability)")
    for day in days:
        sub = [r for r in res if r["case_id"].startswith(day)]
        o = rca.score(sub, labels)["overall"]
        print(f"{day:<22} {o['n']:>4} {o['AC@1']:6.2f} {o['AC@3']:6.2f} {o['Avg@5']:6.2f}")
    # Service probabilities given that there is an incident (the "no incident" answer, whose
    # text names no service, is reported apart).
    cond = []
    none = []
    for r in res:
        svc = {k: v for k, v in r["probs"].items() if k}
        tot = sum(svc.values()) or 1.0
        cond.append({k: v / tot for k, v in svc.items()})
        if "" in r["probs"]:
            none.append(r["probs"][""])
    top_p = [max(c.values()) for c in cond]
    ll = [
        -math.log(max(c.get(labels[r["case_id"]]["root_cause"], 0.0), 1e-6))
        for c, r in zip(cond, res)
    ]
    n_svc = sum(len(c) for c in cond) / len(cond)
    print(
        f"\ncalibration (given an incident): mean top probability {sum(top_p) / len(top_p):.2f} "
        f"vs AC@1 {rep['overall']['AC@1']:.2f}; mean log loss {sum(ll) / len(ll):.2f} "
        f"(uniform over {n_svc:.0f}: {math.log(n_svc):.2f})"
    )
    if none:
        print(f"'no incident' probability on these incidents: mean {sum(none) / len(none):.2f}")
    print(
        f"{len(res)} cases, {elapsed / len(res) * 1000:.0f} ms per case (fresh twin, ingest, "
        "diagnose)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
