"""Coverage of nominal 90 % forecast intervals on the NAB series, before and after the
prediction ledger's recalibration, measured out of sample through the serving code.

Each NAB csv (``$POLARIS_NAB_DIR`` or ``<repo>/../shared/nab``, ``data/*/*.csv``) is
replayed into a statistical twin with its own ledger
(``twin.evaluation.coverage.forecast_interval_coverage``): from 30 % of the series on,
a ``--horizon``-step forecast every ``--every`` points, scored when the replay passes
its horizon; the interval scale applied to a forecast is learned only from forecasts
scored before it was made. Figures are over the second half of each series' forecasts
(held out: the ledger learns during the first half and keeps learning online after):

- ``raw``: share of actuals inside the intervals as the model gave them;
- ``calibrated``: share inside the intervals as the twin delivers them;
- per category and overall (pooled over points), and how many series land in 85-95 %.

No label file is read. ``--filter`` picks files by path substring.

    python bench/interval_coverage.py [--level 0.9] [--horizon 60] [--every 30] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from forecast_backtest import load, nab_dir  # noqa: E402


def one(path: str, level: float, horizon: int, every: int, calibrate: bool = True) -> dict:
    from twin.evaluation.coverage import forecast_interval_coverage

    t, y = load(Path(path))
    t0 = time.perf_counter()
    rep = forecast_interval_coverage(
        {Path(path).stem: (t, y)},
        level=level,
        horizon_steps=horizon,
        every_steps=every,
        calibrate=calibrate,
    )
    return {
        "category": Path(path).parent.name,
        "name": Path(path).stem,
        "held": rep.held_out.as_dict(),
        "all": rep.overall.as_dict(),
        "seconds": time.perf_counter() - t0,
    }


def pooled(rows: list[dict], which: str) -> tuple[float, float, int]:
    pts = sum(r[which]["points"] for r in rows)
    if not pts:
        return math.nan, math.nan, 0
    raw = sum(r[which]["raw"] * r[which]["points"] for r in rows if r[which]["points"]) / pts
    cal = sum(r[which]["calibrated"] * r[which]["points"] for r in rows if r[which]["points"]) / pts
    return raw, cal, pts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--horizon", type=int, default=60)
    p.add_argument("--every", type=int, default=30)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--filter", default="")
    args = p.parse_args(argv)
    files = sorted(str(f) for f in (nab_dir() / "data").glob("*/*.csv") if args.filter in str(f))
    if not files:
        print(f"no NAB csv files under {nab_dir() / 'data'}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    n = len(files)
    argsets = ([args.level] * n, [args.horizon] * n, [args.every] * n)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            rows = list(ex.map(one, files, *argsets))
    else:
        rows = [one(f, args.level, args.horizon, args.every) for f in files]
    lv = round(args.level * 100)
    print(
        f"coverage of nominal {lv} % forecast intervals, {n} NAB series, a {args.horizon}-step "
        f"forecast every {args.every} points from 30 % of each series"
    )
    print(
        "held out = second half of each series' forecasts; raw = model intervals, calibrated = as "
        "delivered by the twin (ledger recalibration)"
    )
    print(
        f"{'series':<50} {'fcsts':>5} {'raw':>6} {'calib':>6}   {'all raw':>7} {'all cal':>7} "
        f"{'MASE':>6}"
    )
    for r in rows:
        h, a = r["held"], r["all"]
        print(
            f"{r['category'] + '/' + r['name']:<50} {h['predictions']:>5} {h['raw']:6.3f} "
            f"{h['calibrated']:6.3f}   {a['raw']:7.3f} {a['calibrated']:7.3f} {a['mase']:6.3f}"
        )
    print()
    print(
        f"{'category':<24} {'n':>3} {'points':>8} {'held raw':>9} {'held cal':>9} {'all raw':>8} "
        f"{'all cal':>8} {'series in 85-95 % (raw→cal)':>28}"
    )
    cats = sorted({r["category"] for r in rows})
    summary = {}
    for c in [*cats, "OVERALL"]:
        rs = [r for r in rows if c == "OVERALL" or r["category"] == c]
        hr, hc, pts = pooled(rs, "held")
        ar, ac, _ = pooled(rs, "all")
        ok_raw = sum(0.85 <= r["held"]["raw"] <= 0.95 for r in rs if r["held"]["points"])
        ok_cal = sum(0.85 <= r["held"]["calibrated"] <= 0.95 for r in rs if r["held"]["points"])
        print(
            f"{c:<24} {len(rs):>3} {pts:>8} {hr:9.3f} {hc:9.3f} {ar:8.3f} {ac:8.3f} {ok_raw:>12} → "
            f"{ok_cal}/{len(rs)}"
        )
        summary[c] = {
            "held_raw": round(hr, 4),
            "held_calibrated": round(hc, 4),
            "all_raw": round(ar, 4),
            "all_calibrated": round(ac, 4),
        }
    print(f"\nwall time {time.perf_counter() - t0:.1f} s ({args.jobs} job(s))")
    import json

    print(json.dumps({"level": args.level, "coverage": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
