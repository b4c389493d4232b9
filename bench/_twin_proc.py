"""A real twin (``TwinApp``: NATS ingestion + gRPC) in its own process.

``ingest``: prints ``{"ready": ..., "port": p}``, then measures events applied per
second from the first received event until ``--count`` were applied (or no
progress for ``--idle`` s).
``serve``: optionally preloads ``--history`` points per series, prints ready with
the gRPC port, serves until a line (or EOF) arrives on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from _common import emit, events


def pick_model(requested: str) -> tuple[str, str]:
    """(model actually used, note): falls back to ``mock`` if ``requested`` cannot load."""
    from twin.core.errors import ModelError
    from twin.models.registry import model_class

    try:
        model_class(requested)
        return requested, ""
    except (ModelError, ImportError) as exc:
        return "mock", f"{requested} unavailable ({exc}); measured with mock"


async def start_twin(url: str, model: str, grpc_port: int = 0, extra: dict | None = None):
    from twin.app import TwinApp
    from twin.core.config import load_config

    dt: dict = {
        "grpc": {"host": "127.0.0.1", "port": grpc_port, "grace_period_sec": 0.5},
        "nats": {"url": url, "reconnect_wait_sec": 0.2},
        "world_model": {"implementation": model},
        "debugging": {"log_level": "WARNING"},
    }
    for k, v in (extra or {}).items():
        dt.setdefault(k, {}).update(v)
    app = TwinApp(load_config(overrides={"digital_twin": dt}, environ={}))
    await app.start()
    return app


async def ingest(args: argparse.Namespace) -> None:
    model, note = pick_model(args.model)
    app = await start_twin(args.url, model)
    stats = app.runtime.ingest_stats
    progress_nc = None
    if args.progress:
        import nats

        # A connection of its own, so the twin's subscriptions are exactly the product's.
        progress_nc = await nats.connect(args.url)

        async def progress(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(str(stats.events_applied).encode())

        await progress_nc.subscribe(args.progress, cb=progress)
        await progress_nc.flush()
    emit({"ready": True, "port": app.grpc_port, "model": model, "note": note})
    first = last = 0.0
    last_applied = -1
    last_change = time.perf_counter()
    while True:
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        if not first and stats.events_received:
            first = now
        if stats.events_applied != last_applied:
            last_applied = stats.events_applied
            last = last_change = now
        if stats.events_applied >= args.count:
            break
        if first and now - last_change > args.idle:
            break
    secs = max(last - first, 1e-9)
    emit(
        {
            "events": stats.events_applied,
            "seconds": secs,
            "events_per_s": stats.events_applied / secs,
            "received": stats.events_received,
            "dead_lettered": stats.dead_lettered,
            "slow_consumer_drops": stats.slow_consumer_drops,
            "model_update_seconds": stats.model_update_seconds,
            "model": model,
            "note": note,
        }
    )
    if progress_nc is not None:
        await progress_nc.close()
    await app.stop()


async def serve(args: argparse.Namespace) -> None:
    model, note = pick_model(args.model)
    # 16 concurrent callers: let gRPC and admission take them all (defaults: 10 each)
    extra = {
        "state": {"max_points_per_series": max(100_000, args.history)},
        "grpc": {"max_workers": 64},
        "performance": {"max_concurrent_queries": 32},
    }
    app = await start_twin(args.url, model, extra=extra)
    if args.history:
        import orjson

        from twin.core.events import decode_stream
        from twin.tools.loadgen import SwimLike

        per_round = (
            len(SwimLike().sample(0.0)) + 4
        )  # swim + web_cluster events per simulated minute
        evs = events(args.history * per_round, step=60.0)
        points = [decode_stream(orjson.dumps(e), 0.0) for e in evs]
        for i in range(0, len(points), 10_000):
            app.runtime.ingest_points(points[i : i + 10_000])
        # "Models cached": let the background fitter finish the initial fits before the
        # clock starts, as in a twin that has been running for a while.
        fit_all = getattr(app.runtime.model, "fit_all", None)
        if fit_all is not None:
            await fit_all()
    emit(
        {
            "ready": True,
            "port": app.grpc_port,
            "model": model,
            "note": note,
            "samples": app.runtime.state.store.sample_count,
        }
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await app.stop()
    emit({"stopped": True})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("ingest", "serve"))
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="statistical")
    p.add_argument("--count", type=int, default=0)
    p.add_argument(
        "--idle", type=float, default=30.0, help="give up after this long without progress"
    )
    p.add_argument("--history", type=int, default=0, help="points per series to preload")
    p.add_argument(
        "--progress", default="", help="ingest: answer requests here with events applied so far"
    )
    a = p.parse_args()
    asyncio.run(ingest(a) if a.mode == "ingest" else serve(a))
