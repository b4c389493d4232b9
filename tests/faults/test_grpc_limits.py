"""gRPC under abuse, against a real server with a slow registered model:

- a request over ``grpc.max_message_size`` → RESOURCE_EXHAUSTED from grpc itself;
- a client deadline shorter than the model's work → DEADLINE_EXCEEDED;
- more concurrent model calls than ``max_concurrent_queries`` (+ as many waiting) →
  the excess gets RESOURCE_EXHAUSTED at once (counted), the rest succeed;
- more concurrent RPCs than ``grpc.max_workers`` → RESOURCE_EXHAUSTED from grpc;
and after each, the server still answers (no hang, no pile-up).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from faults.js_harness import manage, metrics
from faults.slow_model import register

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


async def _codes(calls: list) -> list[grpc.StatusCode]:  # type: ignore[type-arg]
    out = []
    for r in await asyncio.gather(*calls, return_exceptions=True):
        out.append(r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK)
    return out


async def test_oversized_request_is_rejected_with_resource_exhausted(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, grpc={"max_message_size": 65536})
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Query(pb.QueryRequest(query_type="current_state", parameters={"pad": "x" * 100_000}), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await stub.Query(pb.QueryRequest(query_type="current_state", parameters={"pad": "x" * 1000}), timeout=5)
    assert ok.query_id


async def test_deadline_shorter_than_the_model_work_is_deadline_exceeded(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, model=register(), world_model={"settings": {"query_delay": 2.0}})
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Query(pb.QueryRequest(query_type="current_state"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await manage(ch, "health_check")).success


async def test_more_concurrent_queries_than_admitted_get_resource_exhausted_not_a_hang(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, model=register(), world_model={"settings": {"query_delay": 1.0}},
        performance={"max_concurrent_queries": 2}, grpc={"max_workers": 50},
    )
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    codes = await _codes([stub.Query(pb.QueryRequest(query_type="current_state"), timeout=10) for _ in range(10)])
    assert codes.count(grpc.StatusCode.OK) == 4  # 2 running + 2 waiting
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6
    m = await metrics(ch)
    assert m["rpc_rejected_busy_total"] == 6


async def test_more_concurrent_rpcs_than_grpc_workers_are_refused_by_grpc(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, model=register(), world_model={"settings": {"query_delay": 1.0}},
        performance={"max_concurrent_queries": 20}, grpc={"max_workers": 3},
    )
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    codes = await _codes([stub.Simulate(pb.SimulationRequest(simulation_type="forecast", horizon_minutes=5), timeout=10) for _ in range(8)])
    assert codes.count(grpc.StatusCode.OK) == 3
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 5
    assert (await manage(ch, "health_check")).success
