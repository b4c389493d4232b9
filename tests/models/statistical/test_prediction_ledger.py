"""The prediction ledger in a running (in-process) twin with the statistical model:
Simulate answers are recorded once by the runtime, scored as telemetry arrives,
their intervals recalibrated, and a drifting system degrades health and is refitted."""

from __future__ import annotations

import math

import numpy as np

from twin.core.events import Point
from twin.core.state import ActionRecord
from twin.models.domain import Action, SimulationRequest

from stat_support import T0, feed, loadgen_points, runtime


async def test_simulations_are_recorded_by_the_runtime_and_scored_as_telemetry_arrives() -> None:
    rt = await runtime()
    try:
        pts = loadgen_points(600)
        feed(rt, pts[: 400 * 18])
        await rt.model.fit_all()  # type: ignore[attr-defined]
        fc = await rt.simulate(
            SimulationRequest(
                "fc1",
                "forecast",
                [],
                5,
                {"system": "swim", "metrics": "arrival_rate,server_utilization"},
            )
        )
        wi = await rt.simulate(
            SimulationRequest(
                "wi1", "what_if", [Action("ADD_SERVER", "swim", {"count": "1"})], 5, {}
            )
        )
        hyp = await rt.simulate(
            SimulationRequest(
                "wi2",
                "what_if",
                [Action("ADD_SERVER", "swim", {"count": "1"})],
                5,
                {"load_factor": "2"},
            )
        )
        assert fc.success and wi.success and hyp.success
        assert fc.metadata["interval_calibration"].startswith("none yet")
        m = rt.metrics_snapshot()
        assert m["predictions_recorded_total"] == 3 and m["predictions_pending"] == 2
        assert m["predictions_unscorable_total"] == 1, "the load_factor what-if is hypothetical"
        assert m["predictions_recorded_total.swim.statistical.forecast"] == 1
        # The action is executed right away, then the horizon's telemetry arrives.
        newest = rt.state.store.get("swim", "arrival.rate").last_t
        rt.state.actions.append(
            ActionRecord(newest + 1, "a1", "ADD_SERVER", "swim", "success", True, 1.0, "")
        )
        feed(rt, pts[400 * 18 :])
        m = rt.metrics_snapshot()
        assert m["predictions_scored_total"] == 2 and m["predictions_pending"] == 0
        assert 0.0 <= m["forecast_interval_coverage"] <= 1.0
        assert math.isfinite(m["prediction_mase"]) and math.isfinite(m["whatif_error_ratio"])
        rows = {r["id"]: r for r in rt.state.ledger.report()}
        assert rows["fc1"]["outcome"]["per_metric"].keys() == {"arrival.rate", "server.utilization"}
        assert rows["wi1"]["outcome"]["executed"] is True
        assert rows["wi2"]["status"] == "unscorable"
    finally:
        await rt.shutdown()


def noise_points(n: int, start: float, level: float, rng: np.random.Generator) -> list[Point]:
    return [
        Point("svc", "latency", start + 60.0 * i, float(level + rng.normal(0, 1)), "ms", None)
        for i in range(n)
    ]


async def test_drift_degrades_health_refits_the_system_and_recovers() -> None:
    rt = await runtime()
    rt.ingest_connected = True  # no NATS here: health is about the model and the ledger only
    rng = np.random.default_rng(11)
    try:
        feed(rt, noise_points(600, T0, 50.0, rng))
        await rt.model.fit_all()  # type: ignore[attr-defined]
        bt = rt.model.backtest_error("svc", "latency")  # type: ignore[attr-defined]
        assert bt is not None and 0.3 < bt[0] < 3.0
        t = T0 + 600 * 60.0
        entry = rt.model.engine.entries[("svc", "latency")]  # type: ignore[attr-defined]

        async def round_(level: float) -> None:
            nonlocal t
            req = SimulationRequest(
                f"f{t}", "forecast", [], 10, {"system": "svc", "metric": "latency"}
            )
            assert (await rt.simulate(req)).success
            feed(rt, noise_points(11, t, level, rng))
            t += 11 * 60.0

        for _ in range(8):
            await round_(50.0)
        assert rt.state.ledger.drift_reasons() == []
        assert (await rt.health()).status == "healthy"
        refits_before = entry.refits
        for _ in range(6):  # the level moves by 20 sds: the fitted model no longer describes it
            await round_(70.0)
        health = await rt.health()
        assert health.status == "degraded"
        drift = [i for i in health.issues if i.startswith("prediction drift")]
        assert drift and "svc/latency" in drift[0] and "backtest error" in drift[0]
        pushed = [e for e in rt.state.events.history if e.kind == "drift"]
        assert [(e.system, e.data["metric"]) for e in pushed] == [("svc", "latency")]
        assert ("svc", "latency") in rt.model.engine.refit_requested or entry.refits > refits_before  # type: ignore[attr-defined]
        assert rt.metrics_snapshot()["prediction_refits_total"] == 1
        await rt.model.fit_all()  # type: ignore[attr-defined]
        assert entry.refits == refits_before + 1
        for _ in range(8):  # forecasts of the refitted model are fine again
            await round_(70.0)
        assert rt.state.ledger.drift_reasons() == []
        assert (await rt.health()).status == "healthy"
    finally:
        await rt.shutdown()
