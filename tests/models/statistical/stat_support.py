"""Helpers for the statistical-model tests: real telemetry (load generator, NAB) and an
in-process runtime running the ``statistical`` model."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from twin.core.config import load_config
from twin.core.events import Point, normalise_name, parse_time
from twin.runtime import TwinRuntime
from twin.tools.loadgen import telemetry

ROOT = Path(__file__).resolve().parents[3]
NAB = Path(os.environ.get("POLARIS_NAB_DIR", ROOT.parent / "shared" / "nab"))
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
EVENTS_PER_ROUND = 19  # loadgen: 11 swim + 3 utilization.server.N + 5 web_cluster


def loadgen_points(rounds: int, start: float = T0, step: float = 5.0, seed: int = 1) -> list[Point]:
    """``rounds`` rounds of the load generator's SWIM + web_cluster telemetry as Points."""
    out = []
    for ev in itertools.islice(
        telemetry(seed=seed, start=start, step=step), rounds * EVENTS_PER_ROUND
    ):
        out.append(
            Point(
                ev["source"],
                normalise_name(ev["name"]),
                parse_time(ev["timestamp"]),
                float(ev["value"]),
                ev["unit"],
                None,
            )
        )
    return out


def nab_series(rel: str) -> tuple[np.ndarray, np.ndarray]:
    from twin.evaluation.nab import load_series

    stamps, values = load_series(NAB / "data" / rel)
    return stamps.astype("datetime64[s]").astype(np.int64).astype(float), values


def nab_points(
    rel: str, source: str = "nab", name: str = "value", limit: int | None = None
) -> list[Point]:
    t, v = nab_series(rel)
    if limit:
        t, v = t[:limit], v[:limit]
    return [
        Point(source, name, float(a), float(b), "unknown", None)
        for a, b in zip(t.tolist(), v.tolist())
    ]


async def runtime(**settings: Any) -> TwinRuntime:
    """An initialised in-process runtime with the statistical model (fitting manual by default)."""
    settings.setdefault("background_fitting", False)
    cfg = load_config(
        overrides={
            "digital_twin": {"world_model": {"implementation": "statistical", "settings": settings}}
        },
        environ={},
    )
    rt = TwinRuntime(cfg)
    await rt.initialize()
    return rt


def feed(rt: TwinRuntime, points: list[Point], batch: int = 200) -> None:
    for i in range(0, len(points), batch):
        rt.ingest_points(points[i : i + batch])


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
