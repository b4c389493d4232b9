"""Health and a normal query while hostile queries run (issue 17, defect 4).

A statistical twin in its own process is preloaded with ``--history`` points per series
(the load generator's SWIM-like systems). In the same run, this process measures, one
call at a time every 20 ms, the latency of a ``grpc.health.v1`` check and of a normal
``current_state`` query for one system: first alone (the baseline), then while another
process sends hostile queries (the broadest historical range the limits allow, the
issue's 100,000-times-repeated metric, a current_state over everything) with
``--concurrency`` callers. Goal: health and the normal query stay under 50 ms p99.

    python bench/hostile_query.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from _common import BENCH, percentile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from run import Proc

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.ingest.embedded import EmbeddedNatsServer

GOAL_MS = 50.0


async def probe(port: int, seconds: float) -> dict[str, float]:
    health_ms: list[float] = []
    query_ms: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        stub = pb_grpc.DigitalTwinStub(ch)
        query = pb.QueryRequest(query_type="current_state", parameters={"system": "swim"})
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
            t1 = time.perf_counter()
            await stub.Query(query, timeout=10)
            t2 = time.perf_counter()
            health_ms.append((t1 - t0) * 1000)
            query_ms.append((t2 - t1) * 1000)
            await asyncio.sleep(0.02)
    return {
        "health_p50_ms": percentile(health_ms, 0.5),
        "health_p99_ms": percentile(health_ms, 0.99),
        "query_p50_ms": percentile(query_ms, 0.5),
        "query_p99_ms": percentile(query_ms, 0.99),
        "probes": len(health_ms),
    }


async def metric_names(port: int) -> list[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await pb_grpc.DigitalTwinStub(ch).Query(
            pb.QueryRequest(query_type="current_state"), timeout=30
        )
    systems = json.loads(resp.result)["systems"]
    return sorted({m for ms in systems.values() for m in ms})


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="shorter runs, less history")
    p.add_argument(
        "--history",
        type=int,
        default=0,
        help="points per series to preload (default 20000; quick 5000)",
    )
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    seconds = 5.0 if args.quick else 15.0
    history = args.history or (5000 if args.quick else 20000)
    logdir = Path(BENCH / "logs")
    logdir.mkdir(exist_ok=True)
    out: dict[str, Any] = {
        "history_per_series": history,
        "concurrency": args.concurrency,
        "goal_ms": GOAL_MS,
    }
    async with EmbeddedNatsServer() as nats_server:
        twin = await Proc.start(
            logdir,
            "_twin_proc.py",
            "serve",
            "--url",
            nats_server.url,
            "--model",
            "statistical",
            "--history",
            str(history),
        )
        try:
            ready = await twin.line(600)
            port = ready["port"]
            out["samples"] = ready.get("samples")
            out["alone"] = await probe(port, seconds)
            names = await metric_names(port)
            hostile = await Proc.start(
                logdir,
                "_hostile_load.py",
                "--target",
                f"127.0.0.1:{port}",
                "--metrics",
                ",".join(names),
                "--concurrency",
                str(args.concurrency),
                "--duration",
                str(seconds + 2),
            )
            try:
                await hostile.line(60)
                await asyncio.sleep(1.0)
                out["under_hostile_load"] = await probe(port, seconds)
                out["hostile_calls"] = await hostile.line(120)
            finally:
                await hostile.finish()
        finally:
            await twin.send()
            await twin.finish()
    h = out["under_hostile_load"]
    out["met"] = h["health_p99_ms"] <= GOAL_MS and h["query_p99_ms"] <= GOAL_MS
    print(
        f"{out['samples']} samples; hostile callers: {args.concurrency}; calls "
        f"{out['hostile_calls']}"
    )
    print(f"{'':22}{'health p50':>12}{'health p99':>12}{'query p50':>12}{'query p99':>12}")
    for label in ("alone", "under_hostile_load"):
        r = out[label]
        print(f"{label:22}{r['health_p50_ms']:12.2f}{r['health_p99_ms']:12.2f}{r['query_p50_ms']:12.2f}{r['query_p99_ms']:12.2f}")
    print(
        f"goal: health and query p99 <= {GOAL_MS:.0f} ms under hostile load: "
        f"{'met' if out['met'] else 'NOT met'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
