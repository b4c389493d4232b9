"""Per-point CPU cost of the streaming detector and of River's HalfSpaceTrees, same run.

Replays every NAB series (fresh detector per series, as the twin has one per series) through:
the compiled kernel's per-series batch call (``score_batch``: what the ingestion hot path
calls), the kernel point by point (``update`` from Python), the pure-Python reference, and River's
``MinMaxScaler | HalfSpaceTrees`` (``score_one`` + ``learn_one`` per point) as the peer a user
would reach for. CPU (thread) time, so other load on the shared machine inflates it little.
Run alone: ``python bench/_detector.py [--quick]`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


def _series(quick: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    from twin.evaluation import nab

    data = nab.default_nab_dir() / "data"
    out = []
    if data.is_dir():
        for name in nab.discover_files(data):
            stamps, values = nab.load_series(data / name)
            out.append((stamps.astype("int64").astype(float), values))
    else:  # no NAB checkout: daily-seasonal synthetic series of NAB's length
        rng = np.random.default_rng(0)
        for _ in range(34):
            n = 4000
            out.append(
                (
                    1.7e9 + 300.0 * np.arange(n),
                    10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n),
                )
            )
    return out[::4] if quick else out


def _cpu(fn: Any, series: list[tuple[np.ndarray, np.ndarray]]) -> float:
    points = sum(len(v) for _, v in series)
    c0 = time.thread_time()
    for t, v in series:
        fn(t, v)
    return 1e6 * (time.thread_time() - c0) / points


def measure(quick: bool = False) -> dict[str, Any]:
    """us/point CPU for each implementation, plus bytes of state per series."""
    from twin.models.statistical import anomaly

    series = _series(quick)
    out: dict[str, Any] = {"points": sum(len(v) for _, v in series), "series": len(series)}
    kernel = anomaly.KernelAnomalyDetector
    if kernel is not None:
        out["kernel_batch_us"] = min(
            _cpu(lambda t, v: kernel().score_batch(t, v), series) for _ in range(3)
        )

        def per_point(t: np.ndarray, v: np.ndarray) -> None:
            update = kernel().update
            for a, b in zip(t.tolist(), v.tolist(), strict=True):
                update(a, b)

        out["kernel_update_us"] = _cpu(per_point, series)
        det = kernel()
        t, v = series[0]
        for k in range(3):  # a long-lived series: every window full
            det.score_batch(t + k * (t[-1] - t[0] + 300.0), v)
        out["kernel_state_bytes_full"] = det.state_bytes()

    def reference(t: np.ndarray, v: np.ndarray) -> None:
        update = anomaly.PythonAnomalyDetector().update
        for a, b in zip(t.tolist(), v.tolist(), strict=True):
            update(a, b)

    out["python_us"] = _cpu(reference, series[::2] if quick else series)
    try:
        from river import anomaly as ranomaly
        from river import compose, preprocessing
    except ImportError:
        out["river_hst_us"] = None
    else:

        def river(t: np.ndarray, v: np.ndarray) -> None:
            model = compose.Pipeline(
                preprocessing.MinMaxScaler(), ranomaly.HalfSpaceTrees(seed=42)
            )
            for b in v.tolist():
                x = {"value": b}
                model.score_one(x)
                model.learn_one(x)

        out["river_hst_us"] = _cpu(river, series[::4] if quick else series[::2])
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    print(json.dumps(measure(p.parse_args().quick)))
