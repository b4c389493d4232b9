"""Robustness battery for the diagnosis: degraded inputs, the ranking within a stated loss.

Each transform takes one incident's telemetry (the ``Point`` list of a case) and returns a
degraded copy; the case is then diagnosed exactly as ``eval rca`` does (fresh twin, RPC
mapping) and scored against the clean run:

* ``missing``: 30 % of the services (drawn at random, the root cause included if drawn)
  lose half of their metrics;
* ``sampling_2x`` / ``sampling_half``: every series resampled to twice / half its rate
  (midpoints linearly interpolated; every other sample dropped);
* ``skew``: each service's clock is off by a random offset in ±half a sampling step
  (``skew_wide``: ± one and a half steps), so samples of different services no longer line up;
* ``noisy_neighbour``: one service that is *not* the root cause (drawn at random; the only
  transform that reads the label, to be sure the noise is not the fault) gets heavy-tailed
  multiplicative noise on every metric over the whole window.

Every transform is seeded by the case id, so a run is reproducible. ``LOSS_BUDGET`` states
the largest drop of AC@1 / Avg@5 allowed against the clean run (``bench/diagnosis_robustness.py``
prints the table; ``tests/evaluation/test_rca_robustness.py`` checks it at smaller size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twin.core.events import Point

__all__ = ["LOSS_BUDGET", "TRANSFORMS", "Transform", "apply", "run_battery", "services_of"]

Transform = Callable[[list[Point], np.random.Generator, str], list[Point]]

#: Largest allowed drop against the clean run, per transform: (AC@1, Avg@5).
LOSS_BUDGET: dict[str, tuple[float, float]] = {
    "missing": (0.15, 0.10),
    "sampling_2x": (0.10, 0.10),
    "sampling_half": (0.15, 0.10),
    "skew": (0.10, 0.10),
    "skew_wide": (0.15, 0.10),
    "noisy_neighbour": (0.10, 0.10),
}


def services_of(points: Sequence[Point]) -> list[str]:
    return sorted({p.source for p in points if not p.source.startswith("_")})


def _series(points: Sequence[Point]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, str]]:
    by: dict[tuple[str, str], tuple[list[float], list[float], str]] = {}
    for p in points:
        if p.text is not None:
            continue
        ts, vs, _u = by.setdefault((p.source, p.name), ([], [], p.unit))
        ts.append(p.t)
        vs.append(p.value)
    out = {}
    for k, (ts, vs, unit) in by.items():
        t = np.asarray(ts, dtype=float)
        v = np.asarray(vs, dtype=float)
        order = np.argsort(t, kind="stable")
        out[k] = (t[order], v[order], unit)
    return out


def _points(series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, str]]) -> list[Point]:
    out = [
        Point(src, name, float(t), float(v), unit, None)
        for (src, name), (ts, vs, unit) in series.items()
        for t, v in zip(ts, vs)
    ]
    out.sort(key=lambda p: p.t)
    return out


def _step(series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, str]]) -> float:
    steps = [float(np.median(np.diff(t))) for t, _v, _u in series.values() if t.size > 2]
    return float(np.median(steps)) if steps else 60.0


def missing(points: list[Point], rng: np.random.Generator, _root: str) -> list[Point]:
    svcs = services_of(points)
    hit = {s for s in svcs if rng.random() < 0.3}
    ser = _series(points)
    keep = {k: v for k, v in ser.items() if k[0] not in hit or rng.random() >= 0.5}
    return _points(keep)


def sampling_2x(points: list[Point], _rng: np.random.Generator, _root: str) -> list[Point]:
    out = {}
    for k, (t, v, unit) in _series(points).items():
        if t.size < 2:
            out[k] = (t, v, unit)
            continue
        tm = (t[:-1] + t[1:]) / 2.0
        vm = (v[:-1] + v[1:]) / 2.0
        tt = np.empty(t.size + tm.size)
        vv = np.empty_like(tt)
        tt[0::2], tt[1::2] = t, tm
        vv[0::2], vv[1::2] = v, vm
        out[k] = (tt, vv, unit)
    return _points(out)


def sampling_half(points: list[Point], _rng: np.random.Generator, _root: str) -> list[Point]:
    return _points({k: (t[::2], v[::2], u) for k, (t, v, u) in _series(points).items()})


def _skew(points: list[Point], rng: np.random.Generator, steps: float) -> list[Point]:
    ser = _series(points)
    span = steps * _step(ser)
    offset = {s: float(rng.uniform(-span, span)) for s in sorted({k[0] for k in ser})}
    return _points({k: (t + offset[k[0]], v, u) for k, (t, v, u) in ser.items()})


def skew(points: list[Point], rng: np.random.Generator, _root: str) -> list[Point]:
    return _skew(points, rng, 0.5)


def skew_wide(points: list[Point], rng: np.random.Generator, _root: str) -> list[Point]:
    return _skew(points, rng, 1.5)


def noisy_neighbour(points: list[Point], rng: np.random.Generator, root: str) -> list[Point]:
    svcs = [s for s in services_of(points) if s != root]
    if not svcs:
        return list(points)
    victim = svcs[int(rng.integers(len(svcs)))]
    out = {}
    for k, (t, v, u) in _series(points).items():
        if k[0] == victim:
            noise = np.abs(rng.standard_t(2.0, size=v.size)) * 0.3
            v = v * (1.0 + noise)
        out[k] = (t, v, u)
    return _points(out)


TRANSFORMS: dict[str, Transform] = {
    "missing": missing,
    "sampling_2x": sampling_2x,
    "sampling_half": sampling_half,
    "skew": skew,
    "skew_wide": skew_wide,
    "noisy_neighbour": noisy_neighbour,
}


def apply(name: str, points: list[Point], case_id: str, root: str = "") -> list[Point]:
    """``TRANSFORMS[name]`` with a generator seeded by (transform, case id)."""
    seed = int.from_bytes(hashlib.sha256(f"{name}/{case_id}".encode()).digest()[:8], "little")
    return TRANSFORMS[name](points, np.random.default_rng(seed), root)


async def run_battery(
    case_dirs: Sequence[Any], names: Sequence[str] | None = None, progress: Any = None
) -> dict[str, Any]:
    """Clean and transformed scores of ``case_dirs`` (``eval rca`` cases), with the losses."""
    from twin.evaluation import rca
    from twin.evaluation.replay import replay_and_diagnose

    names = list(names or TRANSFORMS)
    labels = {d.name: rca.load_labels(d) for d in case_dirs}
    rankings: dict[str, list[dict[str, Any]]] = {n: [] for n in ["clean", *names]}
    items = list(case_dirs)
    it = progress(items, len(items), "robustness cases") if progress else items
    for d in it:
        case = rca.load_case_input(d)
        for n in ["clean", *names]:
            pts = (
                case.points
                if n == "clean"
                else apply(n, case.points, case.case_id, str(labels[d.name]["root_cause"]))
            )
            rep = await replay_and_diagnose(rca._chunks(pts), rca._request(case))
            rankings[n].append({"case_id": case.case_id, "ranking": rep.ranking})
    clean = rca.score(rankings["clean"], labels)
    out: dict[str, Any] = {"clean": clean["overall"], "transforms": {}}
    for n in names:
        sc = rca.score(rankings[n], labels)["overall"]
        d1 = clean["overall"]["AC@1"] - sc["AC@1"]
        d5 = clean["overall"]["Avg@5"] - sc["Avg@5"]
        b1, b5 = LOSS_BUDGET[n]
        out["transforms"][n] = {
            **sc,
            "loss_AC@1": d1,
            "loss_Avg@5": d5,
            "budget": [b1, b5],
            "within": d1 <= b1 + 1e-9 and d5 <= b5 + 1e-9,
        }
    return out
