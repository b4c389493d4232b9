"""Hostile gRPC load for ``bench/hostile_query.py``: ``--concurrency`` callers that each
send, in turn, the broadest historical query the limits allow, the issue's attack (one
metric named 100,000 times; refused), and a current_state over every series."""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from _common import emit

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


async def main(args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(args.target) as ch:
        stub = pb_grpc.DigitalTwinStub(ch)
        names = args.metrics.split(",")
        requests = [
            # every metric of every system, points up to limits.max_points_returned (default 50,000)
            pb.QueryRequest(
                query_type="historical",
                parameters={"metric": ",".join(names), "max_points": str(args.max_points)},
            ),
            pb.QueryRequest(
                query_type="historical", parameters={"metric": ",".join([names[0]] * 100_000)}
            ),
            pb.QueryRequest(query_type="current_state"),
        ]
        stop_at = time.perf_counter() + args.duration
        counts = {"ok": 0, "refused": 0, "other": 0}

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                req = requests[i % len(requests)]
                i += 1
                try:
                    await stub.Query(req, timeout=30)
                    counts["ok"] += 1
                except grpc.aio.AioRpcError as err:
                    counts[
                        "refused"
                        if err.code()
                        in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
                        else "other"
                    ] += 1

        emit({"ready": True})
        await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
    emit(counts)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--max-points", type=int, default=2500, help="per series in the broad historical query"
    )
    p.add_argument("--duration", type=float, default=10.0)
    asyncio.run(main(p.parse_args()))
