"""Plan comparison over real gRPC (and the real grpcurl), with telemetry and execution
results published on NATS in the original formats by the exemplar simulator."""

from __future__ import annotations

import json

import grpc
import pytest
from grpcurl_helper import grpcurl

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.tools.exemplars import Act, SwimTier, constant
from twin.tools.exemplars.feed import publish

from support import wait_for


@pytest.fixture
async def twin(nats_server, nc, make_twin):
    app = await make_twin(
        nats_server.url,
        "statistical",
        world_model={"implementation": "statistical", "settings": {"fit_interval_sec": 0.2}},
    )
    ex = SwimTier(3, servers=4, dimmer=0.5, s_basic=0.05, s_opt=0.09)
    seg = ex.run(
        1800,
        constant(40.0),
        [(900, Act("SET_DIMMER", {"value": "0.4"})), (1200, Act("SET_DIMMER", {"value": "0.5"}))],
    )
    n = await publish(nc, seg)
    await wait_for(lambda: app.runtime.ingest_stats.events_applied >= n, timeout=30)
    return app


def _plans() -> list[pb.CandidatePlan]:
    a = lambda t, **p: pb.ControlAction(action_type=t, target="swim", params=p)  # noqa: E731
    return [
        pb.CandidatePlan(plan_id="add-2", actions=[a("ADD_SERVER", count="2")]),
        pb.CandidatePlan(plan_id="remove-2", actions=[a("REMOVE_SERVER", count="2")]),
        pb.CandidatePlan(plan_id="dimmer-0.2", actions=[a("SET_DIMMER", value="0.2")]),
    ]


async def test_compare_ranks_plans_and_old_clients_are_unaffected(twin, channel_for) -> None:
    stub = pb_grpc.DigitalTwinStub(channel_for(twin))
    req = pb.SimulationRequest(
        simulation_type="compare",
        plans=_plans(),
        horizon_minutes=60,
        parameters={
            "system": "swim",
            "scenario": "traffic_spike",
            "spike_factor": "1.8",
            "slo.latency_ms": "400",
        },
    )
    r = await stub.Simulate(req, timeout=30)
    assert r.success, r.explanation
    by_id = {o.plan_id: o for o in r.plan_outcomes}
    assert set(by_id) == {"add-2", "remove-2", "dimmer-0.2", "do_nothing"}
    assert [o.rank for o in r.plan_outcomes] == [1, 2, 3, 4]  # best first
    assert by_id["add-2"].rank < by_id["do_nothing"].rank < by_id["remove-2"].rank
    assert by_id["remove-2"].slo_breach_probability > 0.5 > by_id["add-2"].slo_breach_probability
    assert (
        by_id["add-2"].impact_estimates.performance_impact > 0.3
    )  # the spike saturates "do nothing"
    assert all(
        o.future_states and o.explanation and 0 <= o.confidence <= 1 for o in r.plan_outcomes
    )
    assert r.metadata["best_plan"] == r.plan_outcomes[0].plan_id and list(r.future_states) == list(
        r.plan_outcomes[0].future_states
    )
    # A what-if (an old client) gets no plan outcomes and the same fields as before.
    w = await stub.Simulate(
        pb.SimulationRequest(
            simulation_type="what_if", actions=_plans()[0].actions, horizon_minutes=30
        ),
        timeout=30,
    )
    assert (
        w.success and not w.plan_outcomes and w.future_states and w.impact_estimates.cost_impact > 0
    )


@pytest.mark.parametrize(
    "req, field",
    [
        (pb.SimulationRequest(simulation_type="compare", horizon_minutes=30), "plans"),
        (
            pb.SimulationRequest(
                simulation_type="compare", plans=[pb.CandidatePlan(plan_id="do_nothing")]
            ),
            "plans[0].plan_id",
        ),
        (
            pb.SimulationRequest(
                simulation_type="compare",
                plans=[pb.CandidatePlan(plan_id="a"), pb.CandidatePlan(plan_id="a")],
            ),
            "plans[1].plan_id",
        ),
        (
            pb.SimulationRequest(
                simulation_type="what_if",
                actions=[pb.ControlAction(action_type="ADD_SERVER")],
                plans=[pb.CandidatePlan(plan_id="a")],
            ),
            "plans",
        ),
        (
            pb.SimulationRequest(simulation_type="scenario", parameters={"scenario": "meteor"}),
            "parameters.scenario",
        ),
        (
            pb.SimulationRequest(
                simulation_type="compare",
                plans=[
                    pb.CandidatePlan(
                        plan_id="a",
                        actions=[pb.ControlAction(action_type="SET_DIMMER", target="swim")],
                    )
                ],
                parameters={"system": "swim"},
            ),
            "SET_DIMMER",
        ),
    ],
)
async def test_bad_compare_requests_are_invalid_argument(twin, channel_for, req, field) -> None:
    stub = pb_grpc.DigitalTwinStub(channel_for(twin))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Simulate(req, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in exc.value.details()


async def test_compare_with_grpcurl(twin) -> None:
    body = {
        "simulation_type": "compare",
        "horizon_minutes": 60,
        "parameters": {"system": "swim", "scenario": "traffic_spike", "spike_factor": "1.8"},
        "plans": [
            {
                "plan_id": "add-2",
                "actions": [
                    {"action_type": "ADD_SERVER", "target": "swim", "params": {"count": "2"}}
                ],
            },
            {
                "plan_id": "dimmer-0.2",
                "actions": [
                    {"action_type": "SET_DIMMER", "target": "swim", "params": {"value": "0.2"}}
                ],
            },
        ],
    }
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        json.dumps(body),
        f"localhost:{twin.grpc_port}",
        "polaris.digitaltwin.DigitalTwin/Simulate",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc.get("success") is True, out[:2000]
    outcomes = doc["plan_outcomes"]  # grpcurl prints the proto's own field names
    assert [o["plan_id"] for o in outcomes][0] == "add-2" and {o["plan_id"] for o in outcomes} == {
        "add-2",
        "dimmer-0.2",
        "do_nothing",
    }
    assert all("utility" in o and "future_states" in o and "rank" in o for o in outcomes)
    code, _, err = await grpcurl(
        "-plaintext",
        "-d",
        json.dumps({**body, "parameters": {"scenario": "meteor"}}),
        f"localhost:{twin.grpc_port}",
        "polaris.digitaltwin.DigitalTwin/Simulate",
    )
    assert code != 0 and "InvalidArgument" in err and "traffic_spike" in err
