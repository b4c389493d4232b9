"""The prediction ledger over real NATS and gRPC: a forecast and a what-if answered by a
statistical twin, then the telemetry (and the execution result) that follows; the
ledger's figures move in get_metrics and in Manage prediction_report, whose parameters
are validated."""

from __future__ import annotations

import itertools
import math

import grpc
import nats
import orjson
import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.tools.loadgen import batch_message, telemetry

from support import wait_for

T0 = 1_700_000_000.0
PER_ROUND = 18


async def test_predictions_are_scored_and_reported_over_grpc(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url,
        model="statistical",
        world_model={"settings": {"fit_interval_sec": 0.1}},
        predictions={"score_interval_sec": 0.05},
    )
    nc = await nats.connect(nats_server.url)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))

    async def publish(events: list[dict]) -> None:
        for i in range(0, len(events), 100):
            await nc.publish("polaris.telemetry.events.batch", batch_message(events[i : i + 100]))
        await nc.flush()

    async def metrics() -> dict[str, str]:
        return dict(
            (await stub.Manage(pb.ManagementRequest(operation="get_metrics"), timeout=10)).metrics
        )

    try:
        events = list(itertools.islice(telemetry(seed=5, start=T0, step=5.0), 500 * PER_ROUND))
        await publish(events[: 400 * PER_ROUND])
        store = app.runtime.state.store
        await wait_for(lambda: store.sample_count >= 400 * PER_ROUND, 30)
        await wait_for(lambda: app.runtime.model.engine.fitted_count >= 18, 60)  # type: ignore[attr-defined]

        fc = await stub.Simulate(
            pb.SimulationRequest(
                simulation_id="fc-1",
                simulation_type="forecast",
                horizon_minutes=3,
                parameters={"system": "swim", "metric": "arrival_rate"},
            ),
            timeout=30,
        )
        wi = await stub.Simulate(
            pb.SimulationRequest(
                simulation_id="wi-1",
                simulation_type="what_if",
                horizon_minutes=3,
                actions=[
                    pb.ControlAction(action_type="ADD_SERVER", target="swim", params={"count": "1"})
                ],
            ),
            timeout=30,
        )
        assert fc.success and wi.success
        assert "interval_calibration" in fc.metadata
        m = await metrics()
        assert (
            m["predictions_recorded_total"] == "2"
            and m["predictions_pending"] == "2"
            and m["predictions_scored_total"] == "0"
        )
        assert "forecast_interval_coverage" not in m, "undefined until a forecast is scored"

        # What happened next: the action was executed, and the telemetry covers the horizon.
        newest = store.get("swim", "arrival.rate").last_t
        await nc.publish(
            "polaris.execution.results",
            orjson.dumps(
                {
                    "action_id": "x1",
                    "action_type": "ADD_SERVER",
                    "target": "swim",
                    "status": "success",
                    "finished_at": newest + 2,
                }
            ),
        )
        await publish(events[400 * PER_ROUND :])
        await wait_for(
            lambda: app.runtime.state.ledger.totals()["predictions_scored_total"] == 2, 30
        )
        m = await metrics()
        assert m["predictions_scored_total"] == "2" and m["predictions_pending"] == "0"
        assert 0.0 <= float(m["forecast_interval_coverage"]) <= 1.0
        assert math.isfinite(float(m["prediction_mase"])) and math.isfinite(
            float(m["whatif_error_ratio"])
        )
        assert m["predictions_scored_total.swim.statistical.what_if"] == "1"

        # Each outcome was also pushed (Watch replays the events the twin retains).
        pushed: dict[str, pb.TwinEvent] = {}
        stream = stub.Watch(
            pb.WatchRequest(kinds=["prediction_outcome"], from_start=True), timeout=10
        )
        async for ev in stream:
            pushed[ev.data["id"]] = ev
            if len(pushed) == 2:
                break
        stream.cancel()
        assert set(pushed) == {"fc-1", "wi-1"}
        assert pushed["wi-1"].system == "swim" and pushed["wi-1"].data["status"] == "scored"
        assert pushed["fc-1"].data["kind"] == "forecast"

        rep = await stub.Manage(
            pb.ManagementRequest(
                operation="prediction_report", parameters={"system": "swim", "limit": "10"}
            ),
            timeout=10,
        )
        assert rep.success and rep.metrics["returned"] == "2"
        body = orjson.loads(rep.result)
        by_id = {p["id"]: p for p in body["predictions"]}
        assert by_id["fc-1"]["status"] == "scored" and by_id["fc-1"]["kind"] == "forecast"
        assert by_id["fc-1"]["outcome"]["per_metric"]["arrival.rate"]["points"] > 0
        assert by_id["wi-1"]["outcome"]["executed"] is True
        assert by_id["wi-1"]["actions"] == [{"action_type": "ADD_SERVER", "target": "swim"}]
        assert {a["kind"] for a in body["aggregates"]} == {"forecast", "what_if"}
        assert body["skill"]["forecast"]["n"] == 1
        one = orjson.loads(
            (
                await stub.Manage(
                    pb.ManagementRequest(
                        operation="prediction_report", parameters={"kind": "what_if", "limit": "1"}
                    ),
                    timeout=10,
                )
            ).result
        )
        assert [p["id"] for p in one["predictions"]] == ["wi-1"]
        for bad, field in (
            ({"kind": "guess"}, "parameters.kind"),
            ({"limit": "0"}, "parameters.limit"),
            ({"limit": "lots"}, "parameters.limit"),
            ({"limit": "501"}, "parameters.limit"),
            ({"sytem": "swim"}, "parameters"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Manage(
                    pb.ManagementRequest(operation="prediction_report", parameters=bad), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(field)
    finally:
        await nc.drain()
