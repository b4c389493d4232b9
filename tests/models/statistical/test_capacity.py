"""Queueing formulas and the what-if simulation through the model (load-generator telemetry)."""

from __future__ import annotations

import math

import pytest

from twin.core.errors import InvalidRequest
from twin.models.base import Action, SimulationRequest
from twin.models.statistical.capacity import erlang_c, mgc

from stat_support import feed, loadgen_points, runtime


def test_erlang_c_and_mgc_closed_forms() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)  # M/M/2 at a=1: 1/3
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 0.0) == 0.0
    p = mgc(7.0, 1, 1.0, 0.1, 0.1)  # M/M/1 with s=0.1, rho=0.7: R = s/(1-rho)
    assert p.stable and p.r_avg == pytest.approx(0.1 / 0.3) and p.utilization == pytest.approx(0.7)
    assert not mgc(30.0, 2, 1.0, 0.1, 0.1).stable


def _what_if(actions: list[Action], horizon: int = 30, **params: str) -> SimulationRequest:
    return SimulationRequest("w", "what_if", actions, horizon, dict(params))


@pytest.fixture
async def rt():
    r = await runtime()
    feed(r, loadgen_points(720))  # one hour of telemetry at 5 s
    await r.model.fit_all()
    try:
        yield r
    finally:
        await r.shutdown()


async def test_server_and_dimmer_actions_move_the_predictions_the_right_way(rt) -> None:
    m = rt.model
    base = await m.simulate(_what_if([Action("CUSTOM", "swim")]))
    add = await m.simulate(_what_if([Action("ADD_SERVER", "swim", {"count": "2"})]))
    rem = await m.simulate(_what_if([Action("REMOVE_SERVER", "swim")]))
    dim = await m.simulate(_what_if([Action("SET_DIMMER", "swim", {"value": "0.2"})]))
    up = await m.simulate(_what_if([Action("SCALE_UP", "swim")]))
    down = await m.simulate(_what_if([Action("SCALE_DOWN", "swim")]))
    for r in (base, add, rem, dim, up, down):
        assert r.success and r.future_states and r.impact is not None

    def mean(r, k):
        vals = [s.metrics[k] for s in r.future_states]
        return sum(vals) / len(vals)

    rt_base = mean(base, "average.response.time")
    assert (
        mean(add, "average.response.time")
        < mean(up, "average.response.time")
        < rt_base
        < mean(rem, "average.response.time")
    )
    assert mean(down, "server.utilization") == pytest.approx(mean(rem, "server.utilization"))
    assert mean(dim, "average.response.time") < rt_base
    assert mean(dim, "optional.throughput") < mean(base, "optional.throughput")
    assert add.future_states[0].metrics["active.servers"] == 5.0
    assert {f"utilization.server.{i}" for i in range(1, 6)} <= set(add.future_states[0].metrics)
    assert "utilization.server.4" not in rem.future_states[0].metrics
    assert (
        add.impact.cost_impact > 0
        and add.impact.performance_impact > 0
        and add.impact.reliability_impact > 0
    )
    assert rem.impact.cost_impact < 0 and rem.impact.performance_impact < 0
    # Baseline figures are carried in every state for comparison.
    s0 = add.future_states[0].metrics
    assert s0["baseline.average.response.time"] > s0["average.response.time"]
    assert (
        s0["average.response.time.lower"]
        <= s0["average.response.time"]
        <= s0["average.response.time.upper"]
    )
    assert "E[S]" in add.explanation and add.custom_metrics[
        "service_rate_per_server"
    ] == pytest.approx(20.0, rel=0.05)


async def test_unknown_actions_are_not_invented(rt) -> None:
    known = await rt.model.simulate(_what_if([Action("ADD_SERVER", "swim")]))
    res = await rt.model.simulate(
        _what_if([Action("RESTART", "swim"), Action("ADD_SERVER", "swim")])
    )
    assert res.success and res.metadata["unknown_actions"] == "RESTART"
    assert res.metadata["action_effects_modelled"] == "false"
    assert "no effect model for RESTART" in res.explanation
    # No invented effect: the prediction is the known action's alone ...
    assert res.custom_metrics["predicted_avg_rt_ms_mean"] == pytest.approx(
        known.custom_metrics["predicted_avg_rt_ms_mean"]
    )
    # ... and the confidence says it may be far off.
    assert res.confidence < known.confidence and res.confidence <= 0.2


async def test_max_servers_clamps_and_bad_params_are_invalid(rt) -> None:
    res = await rt.model.simulate(_what_if([Action("ADD_SERVER", "swim", {"count": "50"})]))
    assert res.future_states[0].metrics["active.servers"] == 10.0 and "clamped" in res.explanation
    with pytest.raises(InvalidRequest):
        await rt.model.simulate(_what_if([Action("SET_DIMMER", "swim", {})]))
    with pytest.raises(InvalidRequest):
        await rt.model.simulate(_what_if([Action("ADD_SERVER", "swim", {"count": "many"})]))


async def test_systems_without_a_capacity_model_are_answered_honestly(rt) -> None:
    from twin.core.events import Point

    t0 = rt.state.store.newest_time
    rt.ingest_points(
        [
            Point("bare", name, t0 - 600 + 10 * i, value, unit, None)
            for i in range(60)
            for name, value, unit in (
                ("cpu.usage", 42.0 + i % 3, "percent"),
                ("response.time", 120.0 + i % 5, "ms"),
                ("request.rate", 30.0, "req/s"),
            )
        ]
    )
    res = await rt.model.simulate(_what_if([Action("ADD_SERVER", "bare", {"count": "2"})]))
    assert res.success and res.future_states  # forecasts of its metrics: real future states
    assert "without a queueing model" in res.explanation and "capacity" in res.explanation
    assert "no effect model for ADD_SERVER" in res.explanation and res.confidence <= 0.2
    s0 = res.future_states[0].metrics
    assert s0["response.time"] == pytest.approx(s0["baseline.response.time"])  # nothing invented


async def test_web_cluster_names_get_a_queue_and_a_traffic_spike_shows_the_gain(rt) -> None:
    """The seed README's example: ADD_SERVER count=2 on web_cluster under a traffic spike."""
    res = await rt.model.simulate(
        _what_if(
            [Action("ADD_SERVER", "web_cluster", {"count": "2"})],
            60,
            scenario="traffic_spike",
            load_factor="1.6",
        )
    )
    assert res.success and res.metadata["action_effects_modelled"] == "true"
    assert res.future_states[0].metrics["instance.count"] == 8.0
    # The baseline saturates during the spike and the plan avoids most of it: a large gain.
    assert (
        res.custom_metrics["baseline_avg_rt_ms_mean"]
        > 3 * res.custom_metrics["predicted_avg_rt_ms_mean"]
    )
    assert res.impact is not None and res.impact.performance_impact > 0.5
    with pytest.raises(InvalidRequest) as exc:
        await rt.model.simulate(_what_if([Action("ADD_SERVER", "web_cluster")], scenario="meteor"))
    assert "traffic_spike" in str(exc.value) and "diurnal_peak" in str(exc.value)


async def test_saturation_is_flagged() -> None:
    r = await runtime()
    try:
        feed(r, loadgen_points(200))
        res = await r.model.simulate(
            _what_if([Action("REMOVE_SERVER", "swim", {"count": "2"})], 10)
        )
        assert res.success and res.custom_metrics["saturated_states"] > 0
        assert "saturates" in res.explanation and any(
            "SATURATED" in s.description for s in res.future_states
        )
        assert all(math.isfinite(v) for s in res.future_states for v in s.metrics.values())
    finally:
        await r.shutdown()


async def test_scenarios_scale_or_fix_the_load(rt) -> None:
    base = await rt.model.simulate(SimulationRequest("s", "scenario", [], 30, {"system": "swim"}))
    double = await rt.model.simulate(
        SimulationRequest(
            "s",
            "scenario",
            [Action("ADD_SERVER", "swim", {"count": "3"})],
            30,
            {"system": "swim", "load_factor": "2"},
        )
    )
    fixed = await rt.model.simulate(
        SimulationRequest("s", "scenario", [], 30, {"system": "swim", "arrival_rate": "10"})
    )
    assert base.success and double.success and fixed.success
    b0, d0 = base.future_states[0].metrics, double.future_states[0].metrics
    assert (
        d0["arrival.rate"] == pytest.approx(2 * b0["arrival.rate"])
        and "load_factor 2" in double.explanation
    )
    assert d0["active.servers"] == 6.0
    assert all(s.metrics["arrival.rate"] == 10.0 for s in fixed.future_states)
    assert fixed.future_states[0].metrics["server.utilization"] < b0["server.utilization"]
    with pytest.raises(InvalidRequest):
        await rt.model.simulate(SimulationRequest("s", "scenario", [], 30, {"load_factor": "-1"}))
