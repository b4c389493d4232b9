"""End to end: load-generator telemetry over NATS into a real twin running the
statistical model, forecasts / what-ifs / NL queries over real gRPC."""

from __future__ import annotations

import itertools
import json

import nats
import orjson

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.tools.loadgen import batch_message, telemetry

from stat_support import EVENTS_PER_ROUND, T0
from support import wait_for


async def test_simulate_forecast_over_grpc(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, model="statistical", world_model={"settings": {"fit_interval_sec": 0.1}}
    )
    nc = await nats.connect(nats_server.url)
    try:
        rounds = 400
        events = list(
            itertools.islice(telemetry(seed=3, start=T0, step=5.0), rounds * EVENTS_PER_ROUND)
        )
        for i in range(0, len(events), 100):
            await nc.publish("polaris.telemetry.events.batch", batch_message(events[i : i + 100]))
        await nc.flush()
        store = app.runtime.state.store
        await wait_for(lambda: store.sample_count >= len(events), 20)
        model = app.runtime.model
        await wait_for(lambda: model.engine.fitted_count >= 18, 60)

        stub = pb_grpc.DigitalTwinStub(channel_for(app))
        res = await stub.Simulate(
            pb.SimulationRequest(
                simulation_type="forecast",
                horizon_minutes=5,
                parameters={"system": "swim", "metrics": "arrival_rate,server_utilization"},
            ),
            timeout=30,
        )
        assert res.success, res.explanation
        assert res.simulation_id and len(res.future_states) == 60
        st = res.future_states[-1]
        assert {
            "arrival.rate",
            "arrival.rate.lower",
            "arrival.rate.upper",
            "server.utilization",
        } <= set(st.metrics)
        assert (
            st.metrics["arrival.rate.lower"]
            <= st.metrics["arrival.rate"]
            <= st.metrics["arrival.rate.upper"]
        )
        assert res.metadata["fitted"] == "true" and res.uncertainty_lower < res.uncertainty_upper

        what_if = await stub.Simulate(
            pb.SimulationRequest(
                simulation_type="what_if",
                horizon_minutes=10,
                actions=[
                    pb.ControlAction(action_type="ADD_SERVER", target="swim", params={"count": "1"})
                ],
            ),
            timeout=30,
        )
        assert what_if.success and what_if.impact_estimates.performance_impact > 0
        assert what_if.future_states[0].metrics["active.servers"] == 4.0

        q = await stub.Query(
            pb.QueryRequest(
                query_type="natural_language", query_content="current cpu usage of web_cluster"
            ),
            timeout=10,
        )
        assert q.success and json.loads(q.result)["matches"][0]["metric"] == "cpu.usage"

        # A calibration event over NATS referring to the forecast's simulation id.
        await nc.publish(
            "polaris.digitaltwin.calibrate",
            orjson.dumps(
                {
                    "prediction_id": res.simulation_id,
                    "predicted_outcome": {},
                    "actual_outcome": {"arrival_rate": st.metrics["arrival.rate"] * 1.1},
                }
            ),
        )
        await nc.flush()
        await wait_for(lambda: model.metrics()["calibration_pairs_total"] == 1, 10)

        health = await stub.Manage(pb.ManagementRequest(operation="health_check"), timeout=5)
        assert health.health_status.model_type == "statistical"
        assert health.health_status.performance_metrics["fitted_forecasters"] >= 18
    finally:
        await nc.drain()
