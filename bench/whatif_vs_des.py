"""What-if capacity predictions of the statistical model vs. a SimPy discrete-event
simulation of the same SWIM-like tier, across utilisations.

For every (target utilisation, action) the DES runs the current configuration, its
telemetry (10 s aggregates with SWIM's metric names) is ingested into an in-process
statistical model, which calibrates itself and predicts the action's effect; then the
DES runs the new configuration. Printed: predicted vs. simulated mean response time and
utilisation, and the relative errors.

    python bench/whatif_vs_des.py [--seeds 2] [--requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "models" / "statistical"))

from swim_des import run_swim_des, telemetry_points

from twin.core.config import load_config
from twin.models.base import Action, SimulationRequest
from twin.runtime import TwinRuntime

S_BASIC, S_OPT = 0.05, 0.09
UTILS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
ACTIONS = {
    "REMOVE_SERVER": (5, 0.5, Action("REMOVE_SERVER", "swim", {"count": "1"}), 4, 0.5),
    "ADD_SERVER": (3, 0.5, Action("ADD_SERVER", "swim", {"count": "1"}), 4, 0.5),
    "SET_DIMMER": (4, 0.2, Action("SET_DIMMER", "swim", {"value": "0.8"}), 4, 0.8),
}


async def predict(telemetry: list[dict[str, float]], action: Action) -> tuple[float, float]:
    cfg = load_config(
        overrides={
            "digital_twin": {
                "world_model": {
                    "implementation": "statistical",
                    "settings": {"background_fitting": False, "capacity_window_sec": 1e7},
                }
            }
        },
        environ={},
    )
    rt = TwinRuntime(cfg)
    await rt.initialize()
    try:
        pts = telemetry_points(telemetry)
        for i in range(0, len(pts), 500):
            rt.ingest_points(pts[i : i + 500])
        await rt.model.fit_all()
        res = await rt.model.simulate(SimulationRequest("w", "what_if", [action], 30, {}))
        if not res.success:
            raise RuntimeError(res.explanation)
        return res.custom_metrics["predicted_avg_rt_ms_mean"] / 1000.0, res.future_states[
            0
        ].metrics["server.utilization"]
    finally:
        await rt.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seeds", type=int, default=2, help="DES replications (different seeds) per cell"
    )
    p.add_argument(
        "--requests",
        type=int,
        default=200_000,
        help="requests per DES run of the new configuration",
    )
    p.add_argument("--base-requests", type=int, default=40_000)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print(
        f"what-if vs SimPy DES: M/G/c tier, s_basic={S_BASIC * 1000:g} ms, s_opt={S_OPT * 1000:g} "
        f"ms (learned from telemetry), {args.seeds} seed(s) per cell"
    )
    print(
        f"{'action':<14} {'util':>5} {'pred RT ms':>10} {'DES RT ms':>10} {'RT err':>7} "
        f"{'pred util':>9} {'DES util':>8} {'util err':>8}"
    )
    by_util: dict[float, list[float]] = {}
    for name, (c0, d0, action, c1, d1) in ACTIONS.items():
        es1 = d1 * S_OPT + (1 - d1) * S_BASIC
        for u in UTILS:
            lam = u * c1 / es1
            if lam * (d0 * S_OPT + (1 - d0) * S_BASIC) / c0 >= 0.97:
                continue  # the current configuration itself would be (nearly) unstable
            errs, uerrs, preds, truths, putil, tutil = [], [], [], [], [], []
            for seed in range(args.seeds):
                base = run_swim_des(
                    lam, c0, d0, S_BASIC, S_OPT, args.base_requests, seed=11 + seed, interval=10.0
                )
                truth = run_swim_des(lam, c1, d1, S_BASIC, S_OPT, args.requests, seed=23 + seed)
                rt_pred, u_pred = asyncio.run(predict(base.telemetry, action))
                errs.append((rt_pred - truth.mean_rt) / truth.mean_rt)
                uerrs.append((u_pred - truth.utilization) / truth.utilization)
                preds.append(rt_pred)
                truths.append(truth.mean_rt)
                putil.append(u_pred)
                tutil.append(truth.utilization)
            e = float(np.mean(np.abs(errs)))
            by_util.setdefault(u, []).append(e)
            print(
                f"{name:<14} {u:5.2f} {np.mean(preds) * 1000:10.1f} {np.mean(truths) * 1000:10.1f} "
                f"{e:7.1%} "
                f"{np.mean(putil):9.3f} {np.mean(tutil):8.3f} {float(np.mean(np.abs(uerrs))):8.1%}"
            )
    print()
    print(f"{'util':>5} {'mean |RT err|':>14} {'max |RT err|':>13}")
    for u in sorted(by_util):
        print(f"{u:5.2f} {np.mean(by_util[u]):14.1%} {np.max(by_util[u]):13.1%}")
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
