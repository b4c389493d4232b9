"""gRPC load client: ``--concurrency`` callers in one grpc.aio process for
``--duration`` seconds (after ``--warmup``); reports QPS and latency percentiles.

``query`` sends Query current_state (optionally for one system); ``simulate`` sends
forecast simulations with a 60-step horizon (60 minutes, 1-minute steps); ``compare``
sends plan comparisons of 10 plans over 60 minutes under a traffic spike."""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from _common import emit, percentile

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


def compare_request(system: str) -> pb.SimulationRequest:
    def act(t: str, **params: str) -> pb.ControlAction:
        return pb.ControlAction(action_type=t, target=system, params=params)

    plans = [
        pb.CandidatePlan(plan_id=f"add-{k}", actions=[act("ADD_SERVER", count=str(k))])
        for k in (1, 2, 3)
    ]
    plans += [
        pb.CandidatePlan(plan_id=f"remove-{k}", actions=[act("REMOVE_SERVER", count=str(k))])
        for k in (1, 2)
    ]
    plans += [
        pb.CandidatePlan(plan_id=f"dimmer-{v}", actions=[act("SET_DIMMER", value=v)])
        for v in ("0", "0.25", "0.5", "0.75")
    ]
    plans.append(
        pb.CandidatePlan(
            plan_id="add-1-dimmer-0.5",
            actions=[act("ADD_SERVER", count="1"), act("SET_DIMMER", value="0.5")],
        )
    )
    return pb.SimulationRequest(
        simulation_id="bench",
        simulation_type="compare",
        horizon_minutes=60,
        plans=plans,
        parameters={"system": system, "scenario": "traffic_spike"},
    )


def request(kind: str, system: str) -> tuple[str, object]:
    if kind == "compare":
        return "Simulate", compare_request(system or "swim")
    if kind == "query":
        params = {"system": system} if system else {}
        return "Query", pb.QueryRequest(
            query_id="bench", query_type="current_state", parameters=params
        )
    params = {"step_minutes": "1", "system": system} if system else {"step_minutes": "1"}
    return "Simulate", pb.SimulationRequest(
        simulation_id="bench", simulation_type="forecast", horizon_minutes=60, parameters=params
    )


async def main(args: argparse.Namespace) -> None:
    method, req = request(args.kind, args.system)
    async with grpc.aio.insecure_channel(args.target) as ch:
        call = getattr(pb_grpc.DigitalTwinStub(ch), method)
        first = await call(req, timeout=30)
        ok = bool(getattr(first, "success", True))
        lat: list[float] = []
        stop_at = 0.0
        record_from = time.perf_counter() + args.warmup
        stop_at = record_from + args.duration
        errors = 0

        async def worker() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    await call(req, timeout=30)
                except grpc.aio.AioRpcError:
                    if t0 >= record_from:
                        errors += 1
                    continue
                t1 = time.perf_counter()
                if t0 >= record_from:
                    lat.append(t1 - t0)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    emit(
        {
            "calls": len(lat),
            "qps": len(lat) / args.duration,
            "p50_ms": percentile(lat, 0.5) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
            "errors": errors,
            "first_success": ok,
            "response_bytes": first.ByteSize(),
        }
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--kind", choices=("query", "simulate", "compare"), default="query")
    p.add_argument("--system", default="swim")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    asyncio.run(main(p.parse_args()))
