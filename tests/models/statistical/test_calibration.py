"""Calibration events correct the model: payload conventions, and predictions after
calibration closer to what the system actually did (load-generator SWIM as the truth)."""

from __future__ import annotations

import numpy as np
import pytest

from twin.core.state import CalibrationRecord
from twin.models.base import Action, SimulationRequest
from twin.models.statistical.calibration import Calibrator
from twin.tools.loadgen import SwimLike

from stat_support import T0, feed, loadgen_points, runtime


def rec(pred: dict, actual: dict, prediction_id: str = "p") -> CalibrationRecord:
    return CalibrationRecord(0.0, "c", prediction_id, pred, actual, {})


def test_single_metric_convention() -> None:
    cal = Calibrator()
    changed = cal.observe(
        rec({"metric": "average_response_time", "system": "swim", "value": 120}, {"value": 150})
    )
    assert changed == {"swim/average.response.time.factor": pytest.approx(1.25)}
    assert cal.correct("swim", "average.response.time", 100.0) == pytest.approx(125.0)
    # A client that already applied the correction reports the corrected prediction:
    # a perfect second prediction leaves the factor where it is.
    cal.observe(
        rec({"metric": "average_response_time", "system": "swim", "value": 125}, {"value": 125})
    )
    assert cal.correct("swim", "average.response.time", 100.0) == pytest.approx(125.0)


def test_dict_of_metrics_convention_and_additive_fallback() -> None:
    cal = Calibrator()
    changed = cal.observe(
        rec(
            {"system": "swim", "server_utilization": 0.5, "temperature": -2.0},
            {"server_utilization": 0.6, "temperature": 1.0, "note": "x"},
        )
    )
    assert changed["swim/server.utilization.factor"] == pytest.approx(1.2)
    assert changed["swim/temperature.bias"] == pytest.approx(3.0)
    assert cal.correct("swim", "temperature", -2.0) == pytest.approx(1.0)


def test_unusable_records_are_ignored() -> None:
    cal = Calibrator()
    assert cal.observe(rec({"foo": "bar"}, {"status": "ok"})) == {}
    assert (
        cal.observe(rec({"metric": "x"}, {"value": 3.0})) == {}
    )  # no predicted value, unknown prediction id
    assert cal.ignored == 2 and not cal.corrections


async def test_prediction_id_refers_to_a_simulation_and_forecasts_are_corrected() -> None:
    rt = await runtime()
    try:
        feed(rt, loadgen_points(300))
        await rt.model.fit_all()
        sim = await rt.model.simulate(
            SimulationRequest(
                "sim-42", "forecast", [], 10, {"system": "web_cluster", "metric": "response_time"}
            )
        )
        predicted = sim.future_states[-1].metrics["response.time"]
        when = sim.future_states[-1].t
        changed = await rt.model.calibrate(
            rec({}, {"response_time": predicted * 1.5, "timestamp": when}, "sim-42")
        )
        assert changed == {"web_cluster/response.time.factor": pytest.approx(1.5)}
        again = await rt.model.simulate(
            SimulationRequest(
                "sim-43", "forecast", [], 10, {"system": "web_cluster", "metric": "response_time"}
            )
        )
        assert again.future_states[-1].metrics["response.time"] == pytest.approx(
            1.5 * predicted, rel=0.02
        )
        assert "calibration factor" in again.explanation
        assert rt.model.metrics()["calibration_pairs_total"] == 1
    finally:
        await rt.shutdown()


async def what_if_errors(calibrate: bool, **settings: float) -> list[float]:
    """Every 10 simulated minutes the twin (fed 3-server SWIM telemetry) predicts the next
    5 minutes under ADD_SERVER; the "real" system (the load generator's own model, not
    M/G/c, and with servers 20 % slower than the telemetry shows: a bias no model of
    the history can know) then runs with 4 servers. With ``calibrate`` the observed mean
    response time comes back as a calibration event referring to the simulation id."""
    rt = await runtime(**settings)
    try:
        truth = SwimLike(seed=7, servers=4, service_rate=16.0)
        errors = []
        start = T0
        feed(rt, loadgen_points(240, start=start))  # 20 min of history first
        for k in range(12):
            now = rt.state.store.newest_time
            sim = await rt.model.simulate(
                SimulationRequest(f"w{k}", "what_if", [Action("ADD_SERVER", "swim")], 5, {})
            )
            predicted = float(
                np.mean([s.metrics["average.response.time"] for s in sim.future_states])
            )
            actual = float(
                np.mean(
                    [
                        next(
                            e["value"]
                            for e in truth.sample(now + dt)
                            if e["name"] == "average_response_time"
                        )
                        for dt in range(5, 301, 5)
                    ]
                )
            )
            errors.append(abs(predicted - actual) / actual)
            if calibrate:
                await rt.model.calibrate(
                    rec(
                        {"metric": "average_response_time", "system": "swim", "value": predicted},
                        {"value": actual},
                        f"w{k}",
                    )
                )
            feed(rt, loadgen_points(120, start=now + 5, seed=1 + k))  # next 10 minutes
        return errors
    finally:
        await rt.shutdown()


async def test_what_if_predictions_are_closer_to_actuals_after_calibration() -> None:
    plain = await what_if_errors(calibrate=False)
    calibrated = await what_if_errors(calibrate=True)
    assert plain[0] == pytest.approx(calibrated[0])  # identical until the first event
    later_plain, later_cal = np.mean(plain[3:]), np.mean(calibrated[3:])
    assert later_cal < 0.7 * later_plain, (later_plain, later_cal)
