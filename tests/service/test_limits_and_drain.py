"""Per-RPC timeouts, admission limits and the drain on shutdown."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.models.base import QueryRequest, QueryResult
from twin.models.mock import MockWorldModel
from twin.models.registry import register_model

from support import wait_for


class SleepyModel(MockWorldModel):
    name = "sleepy_test"

    async def query(self, request: QueryRequest) -> QueryResult:
        await asyncio.sleep(float(request.parameters.get("sleep", "0")))
        return await super().query(request)


async def test_configured_timeout_is_answered_in_band(nats_server, make_twin, channel_for) -> None:
    register_model("sleepy_test", SleepyModel)
    app = await make_twin(
        nats_server.url, model="sleepy_test", performance={"query_timeout_sec": 0.2}
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    r = await stub.Query(
        pb.QueryRequest(query_type="current_state", parameters={"sleep": "2"}), timeout=30
    )
    assert not r.success and "timed out after 0.2s" in r.explanation


async def test_client_deadline_shorter_than_the_work_is_deadline_exceeded(
    nats_server, make_twin, channel_for
) -> None:
    register_model("sleepy_test", SleepyModel)
    app = await make_twin(nats_server.url, model="sleepy_test")
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Query(
            pb.QueryRequest(query_type="current_state", parameters={"sleep": "2"}), timeout=0.3
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_more_concurrent_requests_than_the_limit_are_resource_exhausted(
    nats_server, make_twin, channel_for
) -> None:
    register_model("sleepy_test", SleepyModel)
    app = await make_twin(
        nats_server.url,
        model="sleepy_test",
        performance={"max_concurrent_queries": 2},
        grpc={"max_workers": 50},
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    calls = [
        stub.Query(
            pb.QueryRequest(query_type="current_state", parameters={"sleep": "0.5"}), timeout=30
        )
        for _ in range(8)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.QueryResponse)]
    busy = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 4  # 2 running + 2 waiting
    assert len(busy) == 4 and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in busy)
    assert app.servicer.rpc_metrics.rejected_busy == 4


async def test_stop_drains_everything_already_delivered(nats_server, nc, make_twin) -> None:
    app = await make_twin(nats_server.url, nats={"batch_timeout_sec": 1.0, "batch_size": 1000})
    n = 5000
    for _ in range(n):
        await nc.publish(
            "polaris.telemetry.events.stream",
            orjson.dumps({"name": "m", "value": 1, "source": "s"}),
        )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_received > 0)
    await app.stop()
    assert app.runtime.ingest_stats.events_applied == n
    assert len(app.runtime.state.store.get("s", "m")) == n
