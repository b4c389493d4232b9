"""The DigitalTwin service over real gRPC sockets."""

from __future__ import annotations

import asyncio
import socket

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.app import TwinApp
from twin.ingest.embedded import EmbeddedNatsServer

from support import twin_config, wait_for

STREAM = "polaris.telemetry.events.stream"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def seeded_twin(nats_server, nc, make_twin, model: str = "mock"):
    app = await make_twin(nats_server.url, model=model)
    for i in range(30):
        for name, value in (("cpu_usage", 50 + i), ("response_time", 100 + 2 * i)):
            await nc.publish(
                STREAM,
                orjson.dumps(
                    {
                        "name": name,
                        "value": value,
                        "source": "web_cluster",
                        "timestamp": 1_700_000_000 + 60 * i,
                    }
                ),
            )
    for name, value in (
        ("active_servers", 3),
        ("server_utilization", 0.6),
        ("average_response_time", 180.0),
        ("arrival_rate", 40.0),
        ("dimmer", 1.0),
    ):
        await nc.publish(
            STREAM,
            orjson.dumps(
                {"name": name, "value": value, "source": "swim", "timestamp": 1_700_001_800}
            ),
        )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 65)
    return app


async def test_current_state_and_historical_queries(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await seeded_twin(nats_server, nc, make_twin)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    r = await stub.Query(
        pb.QueryRequest(
            query_type="current_state",
            query_content="What is the current CPU usage?",
            parameters={"system": "web_cluster"},
        )
    )
    assert r.success and r.query_id  # generated and echoed
    doc = orjson.loads(r.result)
    assert doc["systems"]["web_cluster"]["cpu.usage"]["value"] == 79
    r = await stub.Query(
        pb.QueryRequest(
            query_id="q-1",
            query_type="historical",
            parameters={
                "system": "web_cluster",
                "metric": "cpu_usage",
                "at": "2023-11-14T22:13:20Z",
            },
        )
    )
    assert r.query_id == "q-1" and r.success
    assert orjson.loads(r.result)["systems"]["web_cluster"]["cpu.usage"]["value"] == 50
    r = await stub.Query(
        pb.QueryRequest(
            query_type="historical",
            parameters={
                "system": "web_cluster",
                "metric": "response_time",
                "start": "1700000000",
                "end": "1700000600",
                "max_points": "5",
            },
        )
    )
    rng = orjson.loads(r.result)["systems"]["web_cluster"]["response.time"]
    assert rng["samples"] == 11 and len(rng["points"]) == 5 and rng["downsampled"]
    r = await stub.Query(
        pb.QueryRequest(query_type="current_state", parameters={"system": "nowhere"})
    )
    assert (
        not r.success
        and "unknown system 'nowhere'" in r.explanation
        and "web_cluster" in r.explanation
    )


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("Query", pb.QueryRequest(query_type="tell_me"), "unknown query_type 'tell_me'"),
        ("Query", pb.QueryRequest(query_type="natural_language"), "query_content"),
        (
            "Query",
            pb.QueryRequest(query_type="historical", parameters={"system": "web_cluster"}),
            "parameters.metric",
        ),
        (
            "Query",
            pb.QueryRequest(query_type="historical", parameters={"metric": "cpu", "at": "teatime"}),
            "parameters.at",
        ),
        ("Query", pb.QueryRequest(query_type="current_state", timestamp="not-a-time"), "timestamp"),
        (
            "Simulate",
            pb.SimulationRequest(simulation_type="forecast", horizon_minutes=-5),
            "horizon_minutes: must be >= 0",
        ),
        (
            "Simulate",
            pb.SimulationRequest(simulation_type="guess", horizon_minutes=5),
            "unknown simulation_type",
        ),
        (
            "Simulate",
            pb.SimulationRequest(simulation_type="what_if", horizon_minutes=5),
            "at least one action",
        ),
        (
            "Simulate",
            pb.SimulationRequest(
                simulation_type="what_if",
                horizon_minutes=5,
                actions=[pb.ControlAction(action_type="ADD_SERVER", priority="urgent")],
            ),
            "unknown priority",
        ),
        (
            "Manage",
            pb.ManagementRequest(operation="self_destruct"),
            "unknown operation 'self_destruct'",
        ),
        (
            "Manage",
            pb.ManagementRequest(
                operation="reload_model", parameters={"implementation": "crystal_ball"}
            ),
            "unknown world model",
        ),
    ],
)
async def test_malformed_requests_get_invalid_argument_with_a_message(
    nats_server, nc, make_twin, channel_for, method, request_, message
) -> None:
    app = await make_twin(nats_server.url)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, method)(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    snap = app.runtime.metrics_snapshot()
    assert snap[f"rpc_{method.lower()}_responses_total.INVALID_ARGUMENT"] == 1


async def test_mock_simulation_returns_real_future_states(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await seeded_twin(nats_server, nc, make_twin)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    action = pb.ControlAction(
        action_type="ADD_SERVER", target="swim", params={"count": "2"}, priority="normal"
    )
    r = await stub.Simulate(
        pb.SimulationRequest(
            simulation_type="what_if",
            actions=[action],
            horizon_minutes=60,
            parameters={"scenario": "traffic_spike"},
        )
    )
    assert r.success and r.simulation_id
    assert len(r.future_states) == 12
    first = r.future_states[0].metrics
    assert first["active.servers"] == 5
    assert first["server.utilization"] == pytest.approx(0.6 * 3 / 5)
    assert r.impact_estimates.cost_impact == 2
    assert r.metrics.execution_time_sec > 0 and r.metrics.average_confidence > 0
    assert r.future_states[-1].timestamp.startswith("2023-11-14T23:")  # event time + 60 min


async def test_diagnose_ranks_the_deviating_series(nats_server, nc, make_twin, channel_for) -> None:
    app = await seeded_twin(nats_server, nc, make_twin)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    r = await stub.Diagnose(
        pb.DiagnosisRequest(
            anomaly_description="High response times detected",
            context={"system": "web_cluster", "metric": "response_time"},
        )
    )
    assert r.success and r.diagnosis_id
    assert [h.rank for h in r.hypotheses] == list(range(1, len(r.hypotheses) + 1))
    assert sum(h.probability for h in r.hypotheses) <= 1.0 + 1e-9


async def test_manage_operations(nats_server, nc, make_twin, channel_for) -> None:
    app = await seeded_twin(nats_server, nc, make_twin)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    h = await stub.Manage(pb.ManagementRequest(operation="health_check"))
    assert (
        h.success and h.health_status.status == "healthy" and h.health_status.model_type == "mock"
    )
    m = await stub.Manage(pb.ManagementRequest(request_id="r1", operation="get_metrics"))
    assert m.request_id == "r1"
    for key in (
        "events_received_total",
        "events_applied_total",
        "dead_lettered_total",
        "messages_per_second",
        "queue_size",
        "queue_high_water",
        "model_update_seconds_total",
    ):
        assert key in m.metrics, key
    assert m.metrics["events_applied_total"] == "65"
    await stub.Query(pb.QueryRequest(query_type="current_state"))
    m = await stub.Manage(pb.ManagementRequest(operation="get_metrics"))
    assert float(m.metrics["rpc_query_p99_ms"]) > 0 and "model_query_p50_ms" in m.metrics
    r = await stub.Manage(pb.ManagementRequest(operation="reload_model"))
    assert r.success and "reloaded" in r.result
    r = await stub.Manage(pb.ManagementRequest(operation="reset_state"))
    assert r.success and r.metrics["samples"] == "65"
    q = await stub.Query(pb.QueryRequest(query_type="current_state"))
    assert orjson.loads(q.result)["series"] == 0
    r = await stub.Manage(pb.ManagementRequest(operation="list_models"))
    assert {"mock", "statistical", "gemini", "hybrid"} <= set(orjson.loads(r.result))


async def test_health_is_not_serving_until_nats_is_connected_and_on_shutdown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nats_port = s.getsockname()[1]
    app = TwinApp(
        twin_config(
            f"nats://127.0.0.1:{nats_port}",
            nats={"max_reconnect_attempts": -1, "reconnect_wait_sec": 0.1},
        )
    )
    starting = asyncio.create_task(app.start())
    server = None
    try:
        await wait_for(lambda: app.server is not None and app.runtime.model.initialized)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert (
                await health.Check(health_pb2.HealthCheckRequest(service=""))
            ).status == NOT_SERVING
            assert (
                await health.Check(health_pb2.HealthCheckRequest(service="liveness"))
            ).status == SERVING
            server = EmbeddedNatsServer(port=nats_port, jetstream=False)
            await server.start()
            await asyncio.wait_for(starting, 20)
            assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == SERVING
            assert (
                await health.Check(
                    health_pb2.HealthCheckRequest(service="polaris.digitaltwin.DigitalTwin")
                )
            ).status == SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(app.stop())
            assert (await watch.read()).status == NOT_SERVING
            await stopping
    finally:
        starting.cancel()
        await app.stop()
        if server is not None:
            await server.stop()


async def test_health_turns_not_serving_when_nats_goes_away(make_twin, channel_for) -> None:
    server = EmbeddedNatsServer(jetstream=False)
    await server.start()
    try:
        app = await make_twin(server.url, nats={"max_reconnect_attempts": -1})
        health = health_pb2_grpc.HealthStub(channel_for(app))
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
        await server.stop()
        await wait_for(lambda: not app.ingestor.connected, timeout=30)
        await asyncio.sleep(0.1)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING
        m = await pb_grpc.DigitalTwinStub(channel_for(app)).Manage(
            pb.ManagementRequest(operation="health_check")
        )
        assert m.health_status.status == "degraded" and any(
            "NATS" in i for i in m.health_status.issues
        )
    finally:
        await server.stop()


async def test_grpc_settings_are_applied(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, grpc={"max_message_size": 2048}, performance={"max_concurrent_queries": 1}
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Query(pb.QueryRequest(query_type="natural_language", query_content="x" * 5000))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert app.servicer.admission.limit == 1
