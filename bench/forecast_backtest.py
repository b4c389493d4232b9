"""Rolling-origin backtest of the statistical model's forecaster on the NAB series.

For every NAB csv (``$POLARIS_NAB_DIR`` or ``<repo>/../shared/nab``, ``data/*/*.csv``)
and each of ``--origins`` forecast origins spread evenly over the last 30 % of the
series, the forecaster is selected and fitted exactly as the twin does it
(``select_and_fit`` on at most ``--max-fit-points`` points before the origin) and
forecasts ``--horizon`` steps. The benchmark is the seasonal naive forecast with the
daily period of the series (naive when less than two days are available).

Figures per series, per category and overall:

- ``MASE``: MAE of the forecasts / in-sample MAE of the one-step seasonal naive
  forecast on the history before each origin (Hyndman & Koehler).
- ``MASE_snaive``: the same scaled error of the seasonal naive *forecasts* (reference).
- ``rel``: MAE(model) / MAE(seasonal naive) over the same windows (< 1 = better than
  seasonal naive); categories and overall use the geometric mean.
- the model chosen at each origin, and fit time.

``--latency`` also measures the request-path forecast latency (Simulate forecast in
process, cached model, 10k-point history, 60-step horizon).

    python bench/forecast_backtest.py [--origins 5] [--horizon 60] [--jobs 2] [--latency]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.models.statistical.forecast import sampling_step, select_and_fit
from twin.models.statistical.selection import SELECTION_FOLDS


def nab_dir() -> Path:
    env = os.environ.get("POLARIS_NAB_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "nab"


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from twin.evaluation.nab import load_series

    stamps, values = load_series(path)
    return stamps.astype("datetime64[s]").astype(np.int64).astype(float), values


def backtest_file(
    path: str, origins: int, horizon: int, max_fit: int, folds: int = SELECTION_FOLDS
) -> dict:
    t, y = load(Path(path))
    n = y.shape[0]
    step = sampling_step(t)
    m_daily = int(round(86400.0 / step))
    rows = []
    first = int(n * 0.7)
    last = n - horizon
    cuts = np.linspace(first, last, origins).astype(int) if last > first else np.array([last])
    for cut in cuts.tolist():
        lo = max(0, cut - max_fit)
        ht, hy = t[lo:cut], y[lo:cut]
        actual = y[cut : cut + horizon]
        m = m_daily if hy.shape[0] >= 2 * m_daily and m_daily >= 2 else 1
        snaive = hy[-m:][np.arange(horizon) % m] if m > 1 else np.full(horizon, hy[-1])
        scale = float(np.mean(np.abs(hy[m:] - hy[:-m])))
        t0 = time.perf_counter()
        fc, rep = select_and_fit(ht, hy, horizon, folds)
        fit_s = time.perf_counter() - t0
        pred = fc.mean(horizon)
        rows.append(
            {
                "mae": float(np.mean(np.abs(pred - actual))),
                "mae_snaive": float(np.mean(np.abs(snaive - actual))),
                "scale": scale,
                "model": rep.kind + (f"(m={rep.period})" if rep.period > 1 else ""),
                "fit_s": fit_s,
                "m": m,
            }
        )
    mae = float(np.mean([r["mae"] for r in rows]))
    mae_sn = float(np.mean([r["mae_snaive"] for r in rows]))
    scale = float(np.mean([r["scale"] for r in rows])) or 1e-12
    return {
        "file": path,
        "category": Path(path).parent.name,
        "name": Path(path).stem,
        "mase": mae / scale,
        "mase_snaive": mae_sn / scale,
        "rel": (mae / mae_sn) if mae_sn > 0 else (1.0 if mae == 0 else math.inf),
        "models": collections.Counter(r["model"] for r in rows).most_common(2),
        "fit_s": float(np.mean([r["fit_s"] for r in rows])),
        "season_m": rows[-1]["m"],
    }


def gmean(xs: list[float]) -> float:
    xs = [min(max(x, 1e-6), 1e6) for x in xs if math.isfinite(x)]
    return float(np.exp(np.mean(np.log(xs)))) if xs else math.nan


def latency(samples: int = 500) -> dict[str, float]:
    """p50/p99 of Simulate(forecast) on a cached model: 10k-point history, 60 steps."""
    from twin.core.events import Point
    from twin.core.state import TwinState
    from twin.models.base import SimulationRequest
    from twin.models.statistical.model import StatisticalWorldModel

    async def run() -> dict[str, float]:
        state = TwinState()
        model = StatisticalWorldModel(state, {"background_fitting": False})
        await model.initialize()
        rng = np.random.default_rng(1)
        n, step = 10_000, 300.0
        t = 1_600_000_000.0 + step * np.arange(n)
        y = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
        pts = [
            Point("bench", "cpu.usage", float(a), float(b), "percent", None) for a, b in zip(t, y)
        ]
        state.apply_points(pts)
        from twin.models.base import EventBatch

        model.update(EventBatch(pts))
        await model.fit_all()
        method = model.engine.entries[("bench", "cpu.usage")].report.description  # type: ignore[union-attr]
        times = []
        nxt = t[-1]
        for i in range(samples):
            if i % 10 == 0:  # new telemetry between requests: the cached state is advanced
                nxt += step
                p = Point(
                    "bench", "cpu.usage", float(nxt), float(50 + rng.normal()), "percent", None
                )
                state.apply_points([p])
                model.update(EventBatch([p]))
            req = SimulationRequest(
                f"s{i}", "forecast", [], 300, {"system": "bench", "metric": "cpu.usage"}
            )  # 300 min = 60 steps
            t0 = time.perf_counter()
            res = await model.simulate(req)
            times.append(time.perf_counter() - t0)
            assert res.success and len(res.future_states) == 60
        await model.shutdown()
        a = np.array(times) * 1000
        return {
            "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()),
            "method": method,
        }  # type: ignore[dict-item]

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--origins", type=int, default=5)
    p.add_argument("--horizon", type=int, default=60)
    p.add_argument("--max-fit-points", type=int, default=4000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--folds",
        type=int,
        default=SELECTION_FOLDS,
        help="holdout windows used for model selection",
    )
    p.add_argument(
        "--latency", action="store_true", help="also measure request-path forecast latency"
    )
    p.add_argument("--filter", default="", help="only files whose path contains this")
    args = p.parse_args(argv)
    files = sorted(str(f) for f in (nab_dir() / "data").glob("*/*.csv") if args.filter in str(f))
    if not files:
        print(f"no NAB csv files under {nab_dir() / 'data'}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            results = list(
                ex.map(
                    backtest_file,
                    files,
                    [args.origins] * len(files),
                    [args.horizon] * len(files),
                    [args.max_fit_points] * len(files),
                    [args.folds] * len(files),
                )
            )
    else:
        results = [
            backtest_file(f, args.origins, args.horizon, args.max_fit_points, args.folds)
            for f in files
        ]
    wall = time.perf_counter() - t0
    print(
        f"rolling-origin backtest: {len(files)} NAB series, {args.origins} origins each, horizon "
        f"{args.horizon} steps, benchmark seasonal naive (daily period)"
    )
    print(f"{'series':<48} {'MASE':>7} {'MASE_sn':>8} {'rel':>6}  {'fit s':>6}  model(s)")
    for r in results:
        models = ", ".join(f"{k}×{v}" for k, v in r["models"])
        print(
            f"{r['category'] + '/' + r['name']:<48} {r['mase']:7.3f} {r['mase_snaive']:8.3f} "
            f"{r['rel']:6.3f}  {r['fit_s']:6.2f}  {models}"
        )
    print()
    print(
        f"{'category':<24} {'n':>3} {'MASE mean':>10} {'MASE median':>12} {'MASE_sn mean':>13} "
        f"{'rel gmean':>10} {'better':>7}"
    )
    cats = sorted({r["category"] for r in results})
    for c in [*cats, "OVERALL"]:
        rs = [r for r in results if c == "OVERALL" or r["category"] == c]
        mases = [r["mase"] for r in rs]
        print(
            f"{c:<24} {len(rs):>3} {np.mean(mases):10.3f} {np.median(mases):12.3f} "
            f"{np.mean([r['mase_snaive'] for r in rs]):13.3f} "
            f"{gmean([r['rel'] for r in rs]):10.3f} {sum(r['rel'] < 1 for r in rs):>3}/{len(rs)}"
        )
    print(
        f"\nwall time {wall:.1f} s ({args.jobs} job(s)); mean fit time per origin "
        f"{np.mean([r['fit_s'] for r in results]):.2f} s"
    )
    if args.latency:
        lat = latency()
        print(
            f"request-path forecast latency (cached {lat['method']}, 10k history, 60 steps, 500 "
            f"requests): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max "
            f"{lat['max_ms']:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
