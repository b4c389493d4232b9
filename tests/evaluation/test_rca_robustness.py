"""The diagnosis robustness battery at small size: each degraded input keeps the ranking
within its stated loss (plus one case of slack for the small sample)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from twin.core.events import Point
from twin.evaluation import rca
from twin.evaluation.rca_robustness import LOSS_BUDGET, TRANSFORMS, apply, run_battery

CASES = rca.default_rca_dir()
SUBSET = [
    "2022-08-22_043603",  # cartservice cpu_contention
    "2022-08-22_050950",  # checkoutservice return
    "2022-08-22_063539",  # productcatalogservice cpu_consumed
    "2022-08-22_075333",  # adservice exception
    "2022-08-23_125352",  # checkoutservice network_delay
    "2022-08-23_135437",  # emailservice network_delay
    "2022-08-23_144740",  # productcatalogservice return
    "2022-08-23_154743",  # shippingservice cpu_contention
]


def _toy() -> list[Point]:
    pts = []
    for s in ("a", "b", "c", "d"):
        for i in range(20):
            pts.append(Point(s, "cpu", 1000.0 + 60.0 * i, float(i), "%", None))
            pts.append(Point(s, "latency", 1000.0 + 60.0 * i, 1.0, "s", None))
    return pts


def test_transforms_do_what_they_say() -> None:
    pts = _toy()
    up = apply("sampling_2x", pts, "x")
    assert len(up) == len(pts) * 2 - 8 and sorted({p.t for p in up})[1] == 1030.0
    down = apply("sampling_half", pts, "x")
    assert len(down) == len(pts) // 2
    sk = apply("skew", pts, "x")
    offs = {p.source: p.t - 1000.0 for p in sk if p.name == "cpu" and p.value == 0.0}
    assert len(set(offs.values())) == 4 and all(abs(o) <= 30.0 for o in offs.values())
    miss = apply("missing", pts, "case-7")
    assert len(miss) <= len(pts) and {p.source for p in miss} <= {"a", "b", "c", "d"}
    noisy = apply("noisy_neighbour", pts, "x", root="a")
    changed = {p.source for p, q in zip(sorted(noisy), sorted(pts)) if p.value != q.value}
    assert len(changed) == 1 and "a" not in changed
    assert apply("skew", pts, "x") == sk  # seeded by (transform, case)
    assert all(np.isfinite(p.value) for p in noisy)


@pytest.mark.skipif(not (CASES / SUBSET[0]).is_dir(), reason=f"RCA cases not found in {CASES}")
def test_battery_within_budget_at_small_size() -> None:
    dirs = [CASES / c for c in SUBSET]
    rep = asyncio.run(run_battery(dirs))
    assert set(rep["transforms"]) == set(TRANSFORMS)
    n = len(SUBSET)
    for name, r in rep["transforms"].items():
        b1, b5 = LOSS_BUDGET[name]
        assert r["n"] == n
        assert r["loss_AC@1"] <= b1 + 1.0 / n + 1e-9, (name, r)
        assert r["loss_Avg@5"] <= b5 + 1.0 / n + 1e-9, (name, r)
