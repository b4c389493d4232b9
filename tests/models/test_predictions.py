"""From SimulationResults to the ledger: what is recorded for each kind, how intervals
are recalibrated in the answer, and that the statistical model's real answers are
scored as telemetry arrives."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from twin.core.events import Point
from twin.core.ledger import PredictionLedger
from twin.core.state import ActionRecord, TwinState
from twin.models.domain import (
    Action,
    EventBatch,
    PredictedState,
    SimulationRequest,
    SimulationResult,
)
from twin.models.predictions import calibrate_and_record, is_hypothetical

T0 = 1_700_000_000.0


def fill(
    state: TwinState, system: str, metric: str, values: np.ndarray, start: float, step: float = 60.0
) -> float:
    pts = [
        Point(system, metric, start + i * step, float(v), "unknown", None)
        for i, v in enumerate(values.tolist())
    ]
    state.apply_points(pts)
    return pts[-1].t


def states(
    last: float,
    n: int,
    mean: float,
    half: float,
    metric: str = "cpu",
    step: float = 60.0,
    baseline: float | None = None,
) -> list[PredictedState]:
    out = []
    for i in range(1, n + 1):
        m = {metric: mean, f"{metric}.lower": mean - half, f"{metric}.upper": mean + half}
        if baseline is not None:
            m[f"baseline.{metric}"] = baseline
        out.append(PredictedState(last + i * step, m, 0.8))
    return out


def test_hypothetical_what_ifs_are_recognised() -> None:
    def req(**p: str) -> SimulationRequest:
        return SimulationRequest("s", "what_if", [Action("ADD_SERVER", "web")], 60, dict(p))

    assert not is_hypothetical(req())
    assert not is_hypothetical(req(scenario="baseline", load_factor="1"))
    assert is_hypothetical(req(load_factor="2.5"))
    assert is_hypothetical(req(scenario="traffic_spike"))
    assert is_hypothetical(req(arrival_rate="40"))
    assert is_hypothetical(SimulationRequest("s", "scenario", [], 60, {}))


def test_forecast_intervals_are_recalibrated_from_scored_forecasts() -> None:
    rng = np.random.default_rng(5)
    state = TwinState()
    last = fill(state, "web", "cpu", 50 + rng.normal(0, 3, 200), T0)
    led = PredictionLedger()
    for k in range(12):  # a model whose 90 % intervals say sd 1 when the noise has sd 3
        res = SimulationResult(
            True,
            states(last, 10, 50.0, 1.645),
            0.8,
            metadata={"system": "web", "interval_level": "0.9", "uncertainty_metric": "cpu"},
        )
        req = SimulationRequest(f"f{k}", "forecast", [], 10, {"system": "web", "metric": "cpu"})
        assert calibrate_and_record(led, state.store, req, res, "mock") == 1
        if k == 0:
            assert res.metadata["interval_calibration"].startswith("none yet")
            assert res.future_states[0].metrics["cpu.upper"] == pytest.approx(51.645)
        last = fill(state, "web", "cpu", 50 + rng.normal(0, 3, 10), last + 60)
        led.score_due(state.store)
    res = SimulationResult(
        True,
        states(last, 10, 50.0, 1.645),
        0.8,
        uncertainty_lower=48.355,
        uncertainty_upper=51.645,
        metadata={"system": "web", "interval_level": "0.9", "uncertainty_metric": "cpu"},
    )
    calibrate_and_record(
        led,
        state.store,
        SimulationRequest("next", "forecast", [], 10, {"system": "web"}),
        res,
        "mock",
    )
    note = res.metadata["interval_calibration"]
    assert "measured coverage of forecast predictions of these metrics on web" in note
    half = res.future_states[3].metrics["cpu.upper"] - 50.0
    assert 2.0 * 1.645 < half < 5.0 * 1.645, "widened to about three model sds"
    assert res.uncertainty_upper == pytest.approx(res.future_states[-1].metrics["cpu.upper"])
    pending = led.report(limit=1)[0]
    assert pending["id"] == "next" and pending["interval_scale"] > 2.0
    assert led.totals()["forecast_interval_coverage_raw"] < 0.6


def test_what_if_records_actions_and_baseline_and_is_scored_after_execution() -> None:
    state = TwinState()
    last = fill(state, "web", "rt", np.full(100, 200.0), T0)
    led = PredictionLedger()
    res = SimulationResult(
        True, states(last, 10, 100.0, 20.0, "rt", baseline=200.0), 0.7, metadata={"system": "web"}
    )
    req = SimulationRequest("w", "what_if", [Action("ADD_SERVER", "")], 10, {})
    calibrate_and_record(led, state.store, req, res, "statistical")
    [row] = led.report()
    assert row["kind"] == "what_if" and row["actions"] == [
        {"action_type": "ADD_SERVER", "target": "web"}
    ]
    assert row["confidence"] == 0.7
    state.actions.append(
        ActionRecord(last + 30, "a", "ADD_SERVER", "web", "success", True, 1.0, "")
    )
    fill(state, "web", "rt", np.full(12, 110.0), last + 60)
    assert led.score_due(state.store, state.actions) == 1
    out = led.report()[0]["outcome"]
    assert out["executed"] is True and out["rel_error"] == pytest.approx(10 / 110, abs=1e-5)


def test_scenarios_are_recorded_unscored_and_keep_their_intervals() -> None:
    state = TwinState()
    last = fill(state, "web", "rt", np.full(10, 200.0), T0)
    led = PredictionLedger()
    res = SimulationResult(
        True, states(last, 5, 100.0, 20.0, "rt"), 0.7, metadata={"system": "web"}
    )
    calibrate_and_record(
        led,
        state.store,
        SimulationRequest("s", "what_if", [Action("ADD_SERVER", "web")], 5, {"load_factor": "2"}),
        res,
        "statistical",
    )
    assert "interval_calibration" not in res.metadata
    assert led.report()[0]["status"] == "unscorable"
    assert led.totals()["predictions_recorded_total"] == 1


def test_failed_answers_and_answers_without_a_system_are_not_recorded() -> None:
    state = TwinState()
    led = PredictionLedger()
    assert (
        calibrate_and_record(
            led,
            state.store,
            SimulationRequest("x", "forecast"),
            SimulationResult(False, explanation="no"),
            "m",
        )
        == 0
    )
    assert (
        calibrate_and_record(
            led,
            state.store,
            SimulationRequest("y", "forecast"),
            SimulationResult(True, states(T0, 3, 1.0, 0.1)),
            "m",
        )
        == 0
    )
    assert led.totals()["predictions_recorded_total"] == 0


@dataclass
class Plan:
    plan_id: str
    actions: list[Action] = field(default_factory=list)


@dataclass
class Outcome:
    plan_id: str
    future_states: list[PredictedState]
    confidence: float
    metadata: dict[str, str] = field(default_factory=dict)


class CompareRequest(SimulationRequest):  # until the proto's plans land: a dict-backed subclass
    pass


class CompareResult(SimulationResult):
    pass


def test_compare_records_one_plan_prediction_per_outcome() -> None:
    state = TwinState()
    last = fill(state, "web", "rt", np.full(10, 200.0), T0)
    led = PredictionLedger()
    req = CompareRequest("c", "compare", [], 10, {"system": "web"})
    req.plans = [
        Plan("p1", [Action("ADD_SERVER", "web")]),
        Plan("p2", [Action("SET_DIMMER", "web", {"value": "0.5"})]),
    ]  # type: ignore[attr-defined]
    res = CompareResult(True, metadata={"system": "web"})
    res.plan_outcomes = [
        Outcome("baseline", states(last, 5, 200.0, 10.0, "rt"), 0.9),
        Outcome("p1", states(last, 5, 120.0, 10.0, "rt"), 0.6),
        Outcome("p2", states(last, 5, 150.0, 10.0, "rt"), 0.5),
    ]  # type: ignore[attr-defined]
    assert calibrate_and_record(led, state.store, req, res, "statistical") == 3
    rows = {r["plan_id"]: r for r in led.report()}
    assert rows.keys() == {"baseline", "p1", "p2"}
    assert rows["baseline"]["id"] == "c/baseline" and "actions" not in rows["baseline"]
    assert rows["p2"]["actions"] == [{"action_type": "SET_DIMMER", "target": "web"}]
    assert res.plan_outcomes[1].metadata["interval_calibration"].startswith("none yet")  # type: ignore[attr-defined]
    fill(state, "web", "rt", np.full(6, 195.0), last + 60)
    assert led.score_due(state.store, state.actions) == 3
    rows = {r["plan_id"]: r for r in led.report()}
    assert rows["baseline"]["status"] == "scored" and rows["p1"]["status"] == "not_executed"


async def test_statistical_forecasts_are_scored_as_telemetry_arrives() -> None:
    from twin.models.statistical.model import StatisticalWorldModel

    state = TwinState()
    model = StatisticalWorldModel(state, {"background_fitting": False, "interval_level": 0.9})
    await model.initialize()
    rng = np.random.default_rng(2)
    n = 400
    y = 40 + rng.normal(0, 1, n + 300)
    pts = [
        Point("web", "cpu", T0 + 60 * i, float(v), "percent", None)
        for i, v in enumerate(y[:n].tolist())
    ]
    state.apply_points(pts)
    model.update(EventBatch(pts))
    await model.fit_all()
    led = PredictionLedger()
    pos = n
    for k in range(10):
        req = SimulationRequest(f"f{k}", "forecast", [], 20, {"system": "web", "metric": "cpu"})
        res = await model.simulate(req)
        assert res.success
        calibrate_and_record(
            led, state.store, req, res, model.name, getattr(model, "backtest_error", None)
        )
        more = [
            Point("web", "cpu", T0 + 60 * i, float(y[i]), "percent", None)
            for i in range(pos, pos + 25)
        ]
        pos += 25
        state.apply_points(more)
        model.update(EventBatch(more))
        led.score_due(state.store, state.actions)
    tot = led.totals()
    assert tot["predictions_scored_total"] == 10
    assert 0.7 <= tot["forecast_interval_coverage"] <= 1.0
    assert 0 < tot["prediction_mase"] < 2.0
    assert not math.isnan(led.skill("web", "forecast", "cpu").mase)
    await model.shutdown()
