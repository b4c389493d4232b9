"""The statistical model wired into a TwinRuntime, driven with the load generator's
SWIM + web_cluster telemetry and NAB series: anomalies in the state, forecasts via
Simulate, background fitting off the request path, health, metrics and reset."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from twin.core.events import Point
from twin.models.base import DiagnosisRequest, QueryRequest, SimulationRequest
from twin.models.statistical import model as model_mod

from stat_support import T0, feed, loadgen_points, nab_points, runtime
from support import wait_for


def test_importing_the_model_does_not_import_statsmodels() -> None:
    code = (
        "import sys, twin.models.statistical.model; assert 'statsmodels' not in sys.modules and "
        "'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_update_scores_every_point_and_reports_anomalies_in_the_state() -> None:
    rt = await runtime()
    try:
        pts = nab_points(
            "artificialWithAnomaly/art_daily_jumpsup.csv", source="app", name="cpu.usage"
        )
        feed(rt, pts)
        m = rt.model
        assert m.metrics()["detectors"] == 1 and m.points_scored == len(pts)
        t, s = m.anomaly_scores("app", "cpu.usage")
        assert t.shape == s.shape == (1024,) and t[-1] == pts[-1].t and np.all(np.diff(t) > 0)
        assert np.all((s >= 0) & (s <= 1))
        assert m.anomaly_scores("app", "nope")[0].shape == (0,)
        # A spike far outside anything seen: the series becomes anomalous (part of the state).
        spike = Point(
            "app", "cpu.usage", pts[-1].t + 300, 10 * max(p.value for p in pts), "percent", None
        )
        rt.ingest_points([spike])
        res = await m.query(
            QueryRequest("q", "current_state", "", {"system": "app", "include": "anomalies"})
        )
        assert res.success and res.metadata["anomalous_series"] == "1"
        (a,) = res.result["anomalies"]
        assert (a["system"], a["metric"]) == ("app", "cpu.usage") and a["score"] >= m.threshold
        assert a["since"].startswith("2014-04-")
        # Normal points afterwards clear it after the hold period.
        for i in range(m.hold + 1):
            rt.ingest_points(
                [Point("app", "cpu.usage", spike.t + 300 * (i + 1), pts[-1].value, "percent", None)]
            )
        assert m.current_anomalies() == []
        assert m.metrics()["update_seconds_per_point"] > 0
    finally:
        await rt.shutdown()


async def test_forecast_uses_a_fallback_before_fitting_and_never_fits_on_the_request_path() -> None:
    rt = await runtime()
    try:
        feed(rt, loadgen_points(600))  # 50 min of telemetry at 5 s
        req = SimulationRequest(
            "f1", "forecast", [], 10, {"system": "swim", "metric": "arrival_rate"}
        )
        res = await rt.model.simulate(req)
        assert res.success and res.metadata["fitted"] == "false"
        assert (
            "not fitted yet" in res.explanation
            and res.metadata["fallback_metrics"] == "arrival.rate"
        )
        assert rt.model.engine.fitted_count == 0  # no fit happened on the request path
        assert ("swim", "arrival.rate") in rt.model.engine.wanted
        # Background cycle fits requested series first.
        assert await rt.model.fit_cycle(max_fits=1) == 1
        assert rt.model.engine.entries[("swim", "arrival.rate")].forecaster is not None
        res = await rt.model.simulate(
            SimulationRequest(
                "f2", "forecast", [], 10, {"system": "swim", "metric": "arrival_rate"}
            )
        )
        assert res.metadata["fitted"] == "true" and "not fitted" not in res.explanation
        # States at the metric's own resolution (5 s) up to the horizon, with intervals.
        assert len(res.future_states) == 120
        last_t = rt.state.store.get("swim", "arrival.rate").last_t
        assert res.future_states[0].t == pytest.approx(last_t + 5) and res.future_states[
            -1
        ].t == pytest.approx(last_t + 600)
        st = res.future_states[-1]
        assert (
            st.metrics["arrival.rate.lower"]
            < st.metrics["arrival.rate"]
            < st.metrics["arrival.rate.upper"]
        )
        assert (
            res.uncertainty_lower == st.metrics["arrival.rate.lower"]
            and res.uncertainty_upper == st.metrics["arrival.rate.upper"]
        )
        assert 0 < res.confidence <= 1 and res.future_states[0].confidence >= st.confidence
    finally:
        await rt.shutdown()


async def test_forecast_defaults_to_all_metrics_of_the_system_and_rejects_unknown_ones() -> None:
    rt = await runtime()
    try:
        feed(rt, loadgen_points(300))
        await rt.model.fit_all()
        res = await rt.model.simulate(
            SimulationRequest("f", "forecast", [], 5, {"system": "web_cluster"})
        )
        assert res.success
        assert set(res.metadata["metrics"].split(",")) == {
            "cpu.usage",
            "memory.usage",
            "response.time",
            "request.rate",
            "instance.count",
        }
        assert {"cpu.usage", "cpu.usage.lower", "request.rate.upper"} <= set(
            res.future_states[0].metrics
        )
        bad = await rt.model.simulate(
            SimulationRequest(
                "f", "forecast", [], 5, {"system": "web_cluster", "metric": "disk_io"}
            )
        )
        assert not bad.success and "cpu.usage" in bad.explanation
        bad = await rt.model.simulate(
            SimulationRequest("f", "forecast", [], 5, {"system": "nowhere"})
        )
        assert not bad.success and "swim" in bad.explanation
    finally:
        await rt.shutdown()


async def test_forecast_from_a_cached_model_on_a_long_nab_history() -> None:
    """Repeated forecasts reuse the cached model (latency: bench/forecast_backtest.py --latency)."""
    rt = await runtime()
    try:
        pts = nab_points(
            "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv", source="ec2", name="cpu.utilization"
        )
        feed(rt, pts)
        await rt.model.fit_all()
        req = SimulationRequest(
            "f", "forecast", [], 300, {"system": "ec2", "metric": "cpu.utilization"}
        )
        first = await rt.model.simulate(req)
        for _ in range(20):
            res = await rt.model.simulate(req)
        assert len(res.future_states) == 60 and res.metadata["fitted"] == "true"  # 5-minute steps
        assert [s.metrics for s in res.future_states] == [s.metrics for s in first.future_states]
        assert rt.model.engine.entries[("ec2", "cpu.utilization")].fits == 1
    finally:
        await rt.shutdown()


async def test_background_task_fits_and_refits_on_its_own() -> None:
    rt = await runtime(background_fitting=True, fit_interval_sec=0.05, refit_every_points=200)
    try:
        feed(rt, loadgen_points(200))
        key = ("swim", "arrival.rate")
        await wait_for(
            lambda: (
                rt.model.engine.entries.get(key) is not None
                and rt.model.engine.entries[key].forecaster is not None
            ),
            30,
        )
        feed(rt, loadgen_points(250, start=T0 + 1000))
        await wait_for(lambda: rt.model.engine.entries[key].refits >= 1, 30)
        h = await rt.model.health()
        assert h.status == "healthy" and h.performance_metrics["fitted_forecasters"] >= 1
        assert rt.metrics_snapshot()["model.refits_total"] >= 1
    finally:
        await rt.shutdown()
    assert rt.model._task is None


async def test_health_is_degraded_when_fits_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(model_mod, "select_and_fit", broken)
    rt = await runtime()
    try:
        feed(rt, loadgen_points(100))
        await rt.model.fit_cycle()
        h = await rt.model.health()
        assert h.status == "degraded" and any("singular matrix" in i for i in h.issues)
        assert rt.model.metrics()["fit_failures_total"] >= 1
        # Forecasts still answer (fallback), in-band.
        res = await rt.model.simulate(
            SimulationRequest("f", "forecast", [], 5, {"system": "swim", "metric": "dimmer"})
        )
        assert res.success and res.metadata["fitted"] == "false"
    finally:
        await rt.shutdown()


async def test_reset_drops_detectors_forecasters_and_anomalies() -> None:
    rt = await runtime()
    try:
        feed(rt, loadgen_points(100))
        await rt.model.fit_all()
        assert rt.model.engine.fitted_count > 0 and rt.model.tracks
        rt.reset()
        m = rt.model.metrics()
        assert m["detectors"] == 0 and m["fitted_forecasters"] == 0 and m["anomalous_series"] == 0
        res = await rt.model.query(
            QueryRequest("q", "current_state", "", {"include": "anomalies,forecasters"})
        )
        assert res.result["anomalies"] == [] and res.result["forecasters"] == []
    finally:
        await rt.shutdown()


async def test_diagnose_delegates_or_explains_when_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = await runtime()
    try:
        feed(rt, loadgen_points(200))
        monkeypatch.setitem(sys.modules, "twin.models.statistical.diagnosis", None)  # import fails
        res = await rt.model.diagnose(DiagnosisRequest("d1", "slow responses"))
        assert not res.success and "not available" in res.explanation
        monkeypatch.undo()
        seen = {}

        def fake(state, request, scores):  # the contract: a pure sync function
            seen["ok"] = (
                state is rt.state,
                request.diagnosis_id,
                scores("swim", "arrival.rate")[0].shape[0],
            )
            from twin.models.base import DiagnosisResult

            return DiagnosisResult(True, explanation="fake")

        import types

        fake_mod = types.ModuleType("twin.models.statistical.diagnosis")
        fake_mod.diagnose = fake  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "twin.models.statistical.diagnosis", fake_mod)
        res = await rt.model.diagnose(DiagnosisRequest("d2"))
        assert res.success and seen["ok"] == (True, "d2", 200)
    finally:
        await rt.shutdown()


@pytest.mark.parametrize(
    ("cap", "n"), [(100, 250), (100, 50), (100, 32), (100, 33), (1, 5), (64, 64), (64, 65)]
)
def test_score_ring_keeps_the_most_recent_points_in_order(cap: int, n: int) -> None:
    tr = model_mod._Track(cap)
    for i in range(n):
        tr.push(float(i), i / 1000)
    t, s = tr.arrays()
    expected = np.arange(max(0, n - cap), n, dtype=float)
    assert np.array_equal(t, expected) and np.allclose(s, expected / 1000, atol=1e-6)


async def test_catch_up_yields_to_the_loop_and_survives_new_series_and_a_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fit cycle's catch-up of every series yields between slices; series that
    appear meanwhile do not break it, and a reset meanwhile makes the cycle stop."""
    monkeypatch.setattr(model_mod, "CATCH_UP_SLICE_SEC", 0.0)  # yield after every series
    rt = await runtime()
    try:
        feed(rt, loadgen_points(600))
        m = rt.model
        assert await m.fit_all() > 0
        feed(rt, loadgen_points(700)[600:])  # new points for every series to catch up
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                rt.ingest_points([Point("late", f"m{ticks}", T0 + ticks, 1.0, "", None)])
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await m.fit_cycle(max_fits=0)
        assert ticks >= len(rt.state.store) // 2  # the loop ran between the slices
        seen = {k: e.seen for k, e in m.engine.entries.items() if e.forecaster is not None}
        assert seen and all(
            n == rt.state.store.get(*k).appended for k, n in seen.items()
        )  # every fitted series caught up to its last point
        cycle = asyncio.create_task(m.fit_cycle())
        await asyncio.sleep(0)
        m.reset()
        assert await cycle == 0 and m.engine.fitted_count == 0
        task.cancel()
    finally:
        await rt.shutdown()
