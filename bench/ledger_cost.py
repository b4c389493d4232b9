"""What the prediction ledger costs: time per ingested point, and memory per system.

Time. ``--systems`` systems of ``--metrics`` metrics each (one sample per metric every
10 s of event time) are ingested (``TwinState.apply_points``, the ingestion hot path, in
batches of ``--batch`` points). A planner asks every system for a forecast of all its
metrics over ``--horizon`` steps every ``--every`` seconds of event time (default 60 s:
a busy planner), and after each batch the ledger's ``score_due`` runs (the worst case: a
running twin calls it on a 1 s timer, not per batch). The same ingestion is run
without the ledger in the same process, alternating, and the figures are

- ``ledger µs/point``: time in ``score_due`` + ``record`` per ingested point;
- ``ratio``: (ingest + ledger) / ingest alone (1.0 = free);
- ``µs per scored forecast`` and ``µs per idle score_due call`` (nothing due).

Memory. One system filled to its bound (``max_pending`` forecasts of ``max_points``
points, ``max_recent`` scored summaries, skill and interval windows full) measured with
``tracemalloc`` and compared with the ledger's own ``nbytes`` estimate.

    python bench/ledger_cost.py [--systems 20] [--metrics 5] [--points 200000] [--batch 100]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.core.events import Point  # noqa: E402
from twin.core.ledger import PredictionLedger, TrackInput  # noqa: E402
from twin.core.state import TwinState  # noqa: E402

T0 = 1_700_000_000.0
STEP = 10.0


def workload(systems: int, metrics: int, points: int) -> list[Point]:
    rng = np.random.default_rng(1)
    per_series = points // (systems * metrics)
    vals = rng.normal(50, 5, (per_series, systems, metrics))
    return [
        Point(f"sys{s}", f"m{m}", T0 + i * STEP, float(vals[i, s, m]), "unknown", None)
        for i in range(per_series)
        for s in range(systems)
        for m in range(metrics)
    ]


def forecast(
    state: TwinState, ledger: PredictionLedger, system: str, metrics: int, horizon: int, k: int
) -> None:
    tracks = []
    for m in range(metrics):
        s = state.store.get(system, f"m{m}")
        t = s.last_t + STEP * np.arange(1, horizon + 1)
        mean = np.full(horizon, 50.0)
        tracks.append(TrackInput(f"m{m}", t, mean, mean - 8.2, mean + 8.2))
    ledger.record(state.store, f"{system}#{k}", system, "statistical", "forecast", tracks, 0.9)


def run(
    pts: list[Point],
    batch: int,
    with_ledger: bool,
    systems: int,
    metrics: int,
    horizon: int,
    every: float,
) -> tuple[float, float, int, float, float]:
    """(total seconds, seconds in the ledger, predictions scored, idle score_due seconds,
    seconds in ``record``)."""
    state = TwinState()
    ledger = PredictionLedger()
    warm = systems * metrics * 50
    state.apply_points(pts[:warm])
    k = 0
    names = [f"sys{s}" for s in range(systems)]
    nxt = dict.fromkeys(names, 0.0)
    led_s = idle_s = rec_s = 0.0
    idle_n = 0
    gc.collect()
    t0 = time.perf_counter()
    for i in range(warm, len(pts), batch):
        state.apply_points(pts[i : i + batch])
        if with_ledger:
            a = time.perf_counter()
            now = pts[i].t
            for n in names:
                if now >= nxt[n]:
                    k += 1
                    forecast(state, ledger, n, metrics, horizon, k)
                    nxt[n] = now + every
            b = time.perf_counter()
            rec_s += b - a
            if not ledger.score_due(state.store, state.actions):
                idle_s += time.perf_counter() - b
                idle_n += 1
            led_s += time.perf_counter() - a
    total = time.perf_counter() - t0
    scored = int(ledger.totals()["predictions_scored_total"])
    return total, led_s, scored, idle_s / max(1, idle_n), rec_s


def memory(max_pending: int = 100, max_points: int = 240, metrics: int = 4) -> tuple[int, int]:
    """(tracemalloc bytes, ledger.nbytes) of one system at its bounds."""
    state = TwinState()
    rng = np.random.default_rng(2)
    pts = [
        Point("sys", f"m{m}", T0 + i * STEP, float(rng.normal()), "unknown", None)
        for i in range(2000)
        for m in range(metrics)
    ]
    state.apply_points(pts)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ledger = PredictionLedger(max_pending=max_pending, max_points=max_points)
    h = 600  # longer than max_points: subsampled to the bound
    # Fill: scored summaries, skill and interval windows first, then the pending bound.
    for k in range(ledger.max_recent + 20):
        s = state.store.get("sys", "m0")
        tracks = [
            TrackInput(
                f"m{m}",
                s.last_t - STEP * np.arange(h, 0, -1),
                np.zeros(h),
                np.full(h, -1.0),
                np.full(h, 1.0),
            )
            for m in range(metrics)
        ]
        ledger.record(state.store, f"old{k}", "sys", "statistical", "forecast", tracks, 0.9)
        ledger.score_due(state.store, state.actions)
    for k in range(max_pending + 10):
        s = state.store.get("sys", "m0")
        tracks = [
            TrackInput(
                f"m{m}",
                s.last_t + STEP * np.arange(1, h + 1),
                np.zeros(h),
                np.full(h, -1.0),
                np.full(h, 1.0),
            )
            for m in range(metrics)
        ]
        ledger.record(state.store, f"p{k}", "sys", "statistical", "forecast", tracks, 0.9)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, ledger.nbytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--systems", type=int, default=20)
    p.add_argument("--metrics", type=int, default=5)
    p.add_argument("--points", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--horizon", type=int, default=60)
    p.add_argument(
        "--every", type=float, default=60.0, help="event seconds between forecasts of a system"
    )
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    pts = workload(args.systems, args.metrics, args.points)
    base, led, both, idle, rec = [], [], [], [], []
    scored = 0
    for _ in range(args.repeats):
        b, _, _, _, _ = run(
            pts, args.batch, False, args.systems, args.metrics, args.horizon, args.every
        )
        w, ls, scored, idl, rs = run(
            pts, args.batch, True, args.systems, args.metrics, args.horizon, args.every
        )
        base.append(b)
        both.append(w)
        led.append(ls)
        idle.append(idl)
        rec.append(rs)
    n = len(pts) - args.systems * args.metrics * 50
    i = int(np.argmin(both))
    print(
        f"ledger cost: {args.systems} systems x {args.metrics} metrics (10 s sampling), {n} points "
        f"ingested in batches of {args.batch}; "
        f"a {args.horizon}-step forecast of every system every {args.every:g} s of event time; "
        f"score_due after every batch; {scored} forecasts scored per run"
    )
    print(
        f"  ingest alone: {1e6 * min(base) / n:.3f} µs/point; with the ledger: "
        f"{1e6 * min(both) / n:.3f} µs/point (ratio {min(both) / min(base):.3f}, best of "
        f"{args.repeats})"
    )
    print(
        f"  ledger share (record + score_due): {1e6 * led[i] / n:.3f} µs/point; "
        f"{1e6 * led[i] / max(1, scored):.0f} µs per forecast recorded and scored ({args.metrics} "
        f"metrics x {args.horizon} points); idle score_due call {1e6 * min(idle):.1f} µs"
    )
    recorded = max(1, int(round(scored)))
    print(
        f"  split: record {1e6 * rec[i] / recorded:.0f} µs per forecast (paid on the Simulate "
        f"path), scoring {1e6 * (led[i] - rec[i]) / recorded:.0f} µs per forecast (paid by "
        "score_due; a running twin calls it on a 1 s timer, not per batch)"
    )
    memory(max_pending=2)  # first-time imports and caches are not the ledger's
    used, est = memory()
    print(
        "memory of one system at its bounds (100 pending forecasts x 4 metrics, 240 points each; "
        f"100 scored summaries): {used / 1024:.0f} KiB measured (tracemalloc), {est / 1024:.0f} "
        "KiB estimated by ledger_bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
