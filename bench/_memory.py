"""Resident memory per retained sample: appends ``--samples`` samples over
``--series`` series through the store's normal append path, in its own process,
and reports (RSS after − RSS before) / samples."""

from __future__ import annotations

import argparse
import gc

import numpy as np
from _common import emit, rss_bytes


def main(args: argparse.Namespace) -> None:
    from twin.core.store import Retention, SeriesStore

    per_series = args.samples // args.series
    store = SeriesStore(Retention(max_points=per_series))
    chunk = 50_000
    t = np.arange(chunk, dtype=np.float64)
    v = np.random.default_rng(1).normal(size=chunk)
    gc.collect()
    before = rss_bytes()
    for i in range(args.series):
        s = store.series("system", f"metric.{i}")
        for start in range(0, per_series, chunk):
            n = min(chunk, per_series - start)
            s.extend(t[:n] + start, v[:n])
    gc.collect()
    after = rss_bytes()
    n = store.sample_count
    emit(
        {
            "samples": n,
            "rss_delta": after - before,
            "bytes_per_sample": (after - before) / n,
            "store_nbytes_per_sample": store.nbytes / n,
        }
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=10_000_000)
    p.add_argument("--series", type=int, default=100)
    main(p.parse_args())
