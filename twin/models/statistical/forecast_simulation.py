"""The ``forecast`` simulation: every requested metric of a system, forward in time.

Each metric is forecast from its cached forecaster (never fitted here; an unfitted
series gets the engine's fallback and is queued for fitting), corrected by its
calibration, and thinned to at most ``max_forecast_states`` states by striding back
from the horizon. A state's confidence is the lowest over its metrics of
``base / (1 + half-interval / scale)``, where the base is lower for a fallback and the
scale is the metric's recent spread, so a wide interval reads as low confidence.
"""

from __future__ import annotations

import math

import numpy as np

from twin.models.domain import PredictedState, SimulationRequest, SimulationResult
from twin.models.state_queries import requested_metrics
from twin.models.statistical.forecast import ForecastOut
from twin.models.statistical.simulation import SimulationContext, calibrated, resolve_system

__all__ = ["MAX_FORECAST_METRICS", "simulate_forecast"]

MAX_FORECAST_METRICS = 64


def simulate_forecast(ctx: SimulationContext, request: SimulationRequest) -> SimulationResult:
    store = ctx.state.store
    level = ctx.settings.interval_level
    picked = resolve_system(ctx.state, request, "forecast")
    if isinstance(picked, SimulationResult):
        return picked
    system, note = picked
    known = [n for n in store.metrics_of(system) if len(store.get(system, n) or ())]
    wanted = requested_metrics(request.parameters) or known
    missing = [m for m in wanted if m not in known]
    if missing:
        return SimulationResult(
            False,
            explanation=f"unknown metric {missing[0]!r} of {system}; known: "
                        f"{', '.join(known[:40])}",
        )
    if not wanted:
        return SimulationResult(False, explanation=f"{system} has no numeric series to forecast")
    truncated_metrics = len(wanted) > MAX_FORECAST_METRICS
    wanted = wanted[:MAX_FORECAST_METRICS]
    horizon_sec = max(0.0, request.horizon_minutes * 60.0)
    by_time: dict[float, dict[str, float]] = {}
    conf_at: dict[float, float] = {}
    methods: dict[str, str] = {}
    raw_states: dict[float, dict[str, float]] = {}
    first: ForecastOut | None = None
    unfitted: list[str] = []
    truncated = False
    for metric in wanted:
        s = store.get(system, metric)
        assert s is not None
        raw = ctx.engine.forecast((system, metric), s, horizon_sec, level)
        out = calibrated(ctx.calibrator, system, metric, raw)
        if not out.fitted:
            unfitted.append(metric)
            ctx.fallback_forecasts += 1
        truncated |= out.truncated
        methods[metric] = out.method
        first = first or out
        n = out.times.shape[0]
        stride = max(1, math.ceil(n / ctx.settings.max_forecast_states))
        idx = np.arange(n - 1, -1, -stride)[::-1]
        _, recent = s.tail(500)
        scale = max(float(np.std(recent)), float(np.mean(np.abs(recent))) * 0.05, 1e-9)
        base = 0.9 if out.fitted else 0.4
        half = (out.upper - out.lower) / 2.0
        for i in idx.tolist():
            t = round(float(out.times[i]), 3)
            at_t = by_time.setdefault(t, {})
            at_t[metric] = float(out.mean[i])
            at_t[f"{metric}.lower"] = float(out.lower[i])
            at_t[f"{metric}.upper"] = float(out.upper[i])
            raw_states.setdefault(t, {})[metric] = float(raw.mean[i])
            c = base / (1.0 + float(half[i]) / scale)
            conf_at[t] = min(conf_at.get(t, 1.0), c)
    times = sorted(by_time)
    last_t = store.get(system, wanted[0]).last_t  # type: ignore[union-attr]
    states = [
        PredictedState(
            t, by_time[t], round(conf_at[t], 6), f"{system} forecast +{(t - last_t) / 60.0:.1f} min"
        )
        for t in times
    ]
    ctx.calibrator.remember(
        request.simulation_id,
        system,
        [(t, raw_states[t]) for t in times[:: max(1, len(times) // 200)]],
    )
    assert first is not None
    confidence = float(np.mean([s.confidence for s in states])) if states else 0.0
    expl = [
        f"forecast of {len(wanted)} metric(s) of {system}{note} over {request.horizon_minutes} "
        f"min, {int(level * 100)}% prediction intervals as <metric>.lower/.upper"
    ]
    expl.append(
        "; ".join(f"{m}: {methods[m]}" for m in wanted[:10]) + (" ..." if len(wanted) > 10 else "")
    )
    if unfitted:
        expl.append(
            "not fitted yet (fallback with wide intervals; queued for fitting): "
            f"{', '.join(unfitted[:10])}"
        )
    if truncated:
        expl.append(f"horizon truncated to {ctx.engine.max_steps} steps of the sampling interval")
    if truncated_metrics:
        expl.append(f"only the first {MAX_FORECAST_METRICS} metrics were forecast")
    meta = {
        "system": system,
        "metrics": ",".join(wanted),
        "interval_level": str(level),
        "uncertainty_metric": wanted[0],
        "fitted": str(not unfitted).lower(),
        "fallback_metrics": ",".join(unfitted),
        "step_sec": f"{first.step:g}",
        "states": str(len(states)),
    }
    for m in wanted[:10]:
        meta[f"method.{m}"] = methods[m]
    return SimulationResult(
        True,
        states,
        round(confidence, 6),
        float(first.lower[-1]),
        float(first.upper[-1]),
        "; ".join(expl),
        None,
        meta,
        {"metrics_forecast": float(len(wanted)), "fallback_metrics": float(len(unfitted))},
    )
