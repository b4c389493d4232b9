"""gRPC under abuse, against a real server with a slow registered model:

- a request over ``grpc.max_message_size`` → RESOURCE_EXHAUSTED from grpc itself;
- a client deadline shorter than the model's work → DEADLINE_EXCEEDED;
- more concurrent model calls than ``max_concurrent_queries`` (+ as many waiting) →
  the excess gets RESOURCE_EXHAUSTED at once (counted), the rest succeed;
- more concurrent DigitalTwin RPCs than ``grpc.max_workers`` plus the model admission's
  capacity → RESOURCE_EXHAUSTED (counted by limit), while health checks keep answering;
and after each, the server still answers (no hang, no pile-up).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from faults.js_harness import manage, metrics
from faults.slow_model import register
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


async def _codes(calls: list) -> list[grpc.StatusCode]:  # type: ignore[type-arg]
    out = []
    for r in await asyncio.gather(*calls, return_exceptions=True):
        out.append(r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK)
    return out


async def test_oversized_request_is_rejected_with_resource_exhausted(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(nats_server.url, grpc={"max_message_size": 65536})
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Query(
            pb.QueryRequest(query_type="current_state", parameters={"pad": "x" * 100_000}),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await stub.Query(
        pb.QueryRequest(query_type="current_state", parameters={"pad": "x" * 1000}), timeout=5
    )
    assert ok.query_id


async def test_deadline_shorter_than_the_model_work_is_deadline_exceeded(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url, model=register(), world_model={"settings": {"query_delay": 2.0}}
    )
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Query(pb.QueryRequest(query_type="current_state"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await manage(ch, "health_check")).success


async def test_more_concurrent_queries_than_admitted_get_resource_exhausted_not_a_hang(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url, model=register(), world_model={"settings": {"query_delay": 1.0}},
        performance={"max_concurrent_queries": 2}, grpc={"max_workers": 50},
    )
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    codes = await _codes(
        [stub.Query(pb.QueryRequest(query_type="current_state"), timeout=10) for _ in range(10)]
    )
    assert codes.count(grpc.StatusCode.OK) == 4  # 2 running + 2 waiting
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6
    m = await metrics(ch)
    assert (
        m["rpc_rejected_busy_total"] == 6
        and m["rpc_rejected_busy_total.performance.max_concurrent_queries"] == 6
    )


async def test_rpcs_beyond_max_workers_are_refused_but_health_never_is(
    nats_server, make_twin, channel_for
) -> None:
    """Issue 17, defects 5 and 10: grpc.max_workers bounds DigitalTwin RPCs on top of the model
    admission's capacity (2 x max_concurrent_queries); health and reflection are exempt."""
    app = await make_twin(
        nats_server.url, model=register(), world_model={"settings": {"health_delay": 1.0}},
        performance={"max_concurrent_queries": 1}, grpc={"max_workers": 3},
    )
    ch = channel_for(app)
    stub = pb_grpc.DigitalTwinStub(ch)
    health = health_pb2_grpc.HealthStub(ch)
    limiter = app.server.in_flight
    wrap, wrapped = limiter._limit, []
    limiter._limit = lambda handler: wrapped.append(handler) or wrap(handler)
    slow_manage = [
        stub.Manage(pb.ManagementRequest(operation="health_check"), timeout=10) for _ in range(9)
    ]
    probes = [
        health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        for _ in range(30)
    ]
    codes = await _codes(slow_manage)
    answers = await asyncio.gather(*probes)
    assert codes.count(grpc.StatusCode.OK) == 5  # 3 + 2 x 1
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
    assert all(a.status == health_pb2.HealthCheckResponse.SERVING for a in answers)
    m = await metrics(ch)
    assert m["rpc_rejected_busy_total.grpc.max_workers"] == 4 and m["rpc_rejected_busy_total"] == 4
    assert len(wrapped) == 1  # the limit wraps each method once, not each of the 10 RPCs
