"""The ``what_if`` / ``scenario`` simulation: a tier's queue under a plan of actions.

In order, each step a function of its own:

1. ``validate_actions`` - malformed action parameters are INVALID_ARGUMENT;
2. ``capacity.calibrate_tier`` + ``capacity.plan_actions`` - an M/G/c model of the
   system from recent telemetry, and the servers/dimmer after the actions;
3. ``arrival_forecast`` - the arrival rate over the horizon, from the arrival series'
   cached forecaster (or held at the observed throughput);
4. ``apply_scenario`` - the scenario knobs ``load_factor`` and ``arrival_rate``;
5. ``base_confidence`` and ``predict_states`` - per-state metrics after the plan, the
   no-action baseline and the interval from the arrival band, all calibrated;
6. ``estimate_impact`` - cost, performance and reliability against the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twin.core.errors import InvalidRequest
from twin.models.domain import Action, Impact, PredictedState, SimulationRequest, SimulationResult
from twin.models.state_queries import param_float
from twin.models.statistical import capacity
from twin.models.statistical.simulation import SimulationContext, resolve_system

__all__ = [
    "Arrivals",
    "apply_scenario",
    "arrival_forecast",
    "base_confidence",
    "estimate_impact",
    "simulate_what_if",
    "validate_actions",
]


@dataclass(slots=True)
class Arrivals:
    """Arrival rate over the horizon (mean and band, req/s) and how it was obtained."""

    times: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    fitted: bool


@dataclass(slots=True)
class _States:
    states: list[PredictedState]
    rt_new: np.ndarray
    rt_base: np.ndarray
    u_new: list[float]
    u_base: list[float]
    unstable: int


def validate_actions(actions: list[Action]) -> None:
    """SET_DIMMER needs a numeric value; server changes need a count >= 0."""
    for i, a in enumerate(actions):
        kind = a.action_type.upper()
        if kind == "SET_DIMMER":
            v = next((a.params[k] for k in ("value", "dimmer", "level") if k in a.params), None)
            try:
                ok = v is not None and math.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                raise InvalidRequest(
                    "SET_DIMMER needs a numeric value in [0, 1]", f"actions[{i}].params.value"
                )
        elif kind in capacity.SERVER_DELTA:
            v = next(
                (a.params[k] for k in ("count", "servers", "delta", "value") if k in a.params), "1"
            )
            try:
                ok = math.isfinite(float(v)) and float(v) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise InvalidRequest(
                    f"{a.action_type} needs a count >= 0", f"actions[{i}].params.count"
                )


def arrival_forecast(
    ctx: SimulationContext, system: str, cal: capacity.TierCalibration, horizon_sec: float
) -> Arrivals:
    """The arrival series' cached forecast, thinned to ``max_whatif_states`` states."""
    store = ctx.state.store
    lam_series = next(
        (
            s
            for n in ("arrival.rate", "request.rate")
            if (s := store.get(system, n)) is not None and len(s)
        ),
        None,
    )
    if lam_series is None:
        newest = capacity.tier_newest(store, system)
        times = newest + np.linspace(horizon_sec / 10, horizon_sec, 10)
        held = np.full(10, cal.arrival_rate)
        return Arrivals(
            times,
            held,
            held,
            held,
            "held at the observed throughput (no arrival-rate series)",
            False,
        )
    lf = ctx.engine.forecast(
        (system, lam_series.name), lam_series, horizon_sec, ctx.settings.interval_level
    )
    n = lf.times.shape[0]
    stride = max(1, math.ceil(n / ctx.settings.max_whatif_states))
    idx = np.arange(n - 1, -1, -stride)[::-1]
    if not lf.fitted:
        ctx.fallback_forecasts += 1
    return Arrivals(lf.times[idx], lf.mean[idx], lf.lower[idx], lf.upper[idx], lf.method, lf.fitted)


def apply_scenario(arrivals: Arrivals, params: dict[str, str]) -> Arrivals:
    """``arrival_rate`` (req/s held over the horizon, keeping the band's relative spread),
    then ``load_factor`` (multiplies the rate and its band)."""
    load_factor = param_float(params, "load_factor", 1.0)
    if load_factor < 0:
        raise InvalidRequest("must be >= 0", "parameters.load_factor")
    lam, lam_lo, lam_hi, method = arrivals.mean, arrivals.lower, arrivals.upper, arrivals.method
    if params.get("arrival_rate") not in (None, ""):
        rate = param_float(params, "arrival_rate", 0.0)
        if rate < 0:
            raise InvalidRequest("must be >= 0", "parameters.arrival_rate")
        spread_lo, spread_hi = lam_lo / np.maximum(lam, 1e-12), lam_hi / np.maximum(lam, 1e-12)
        lam = np.full(arrivals.times.shape[0], rate)
        lam_lo, lam_hi = lam * spread_lo, lam * spread_hi
        method = f"fixed at {rate:g} req/s (parameters.arrival_rate)"
    if load_factor != 1.0:
        lam, lam_lo, lam_hi = lam * load_factor, lam_lo * load_factor, lam_hi * load_factor
        method += f", × load_factor {load_factor:g}"
    return Arrivals(arrivals.times, lam, np.maximum(lam_lo, 0.0), lam_hi, method, arrivals.fitted)


def base_confidence(
    cal: capacity.TierCalibration, plan: capacity.Plan, arrivals_fitted: bool
) -> float:
    """Confidence before the interval width: lowered for each assumption the model made."""
    conf = 0.85
    if cal.assumed:
        conf *= 0.6
    if not (0.5 <= cal.rt_factor <= 2.0):
        conf *= 0.7
    if plan.unknown:
        conf *= 0.3
    if not arrivals_fitted:
        conf *= 0.7
    return conf


def predict_states(
    ctx: SimulationContext,
    system: str,
    cal: capacity.TierCalibration,
    plan: capacity.Plan,
    arrivals: Arrivals,
    base_conf: float,
    simulation_id: str,
) -> _States:
    store = ctx.state.store
    corr = ctx.calibrator.correct
    t_ref = capacity.tier_newest(store, system)
    lam, lam_lo, lam_hi = arrivals.mean, arrivals.lower, arrivals.upper
    states: list[PredictedState] = []
    raw_states: list[tuple[float, dict[str, float]]] = []
    rt_new, rt_base, u_new, u_base = [], [], [], []
    unstable = 0
    for i in range(arrivals.times.shape[0]):
        after, stable = capacity.tier_metrics(cal, float(lam[i]), plan.servers, plan.dimmer)
        base, _ = capacity.tier_metrics(cal, float(lam[i]), cal.servers, cal.dimmer)
        lo, _ = capacity.tier_metrics(cal, float(lam_lo[i]), plan.servers, plan.dimmer)
        hi, _ = capacity.tier_metrics(cal, float(lam_hi[i]), plan.servers, plan.dimmer)
        raw = dict(after)
        u_after = after["server.utilization"]
        metrics = {k: corr(system, k, v, u_after) for k, v in after.items()}
        for k in ("average.response.time", "server.utilization"):
            metrics[f"{k}.lower"] = corr(system, k, lo[k], lo["server.utilization"])
            metrics[f"{k}.upper"] = corr(system, k, hi[k], hi["server.utilization"])
            metrics[f"baseline.{k}"] = corr(system, k, base[k], base["server.utilization"])
        rt_new.append(metrics["average.response.time"])
        rt_base.append(metrics["baseline.average.response.time"])
        u_new.append(min(1.0, after["server.utilization"]))
        u_base.append(min(1.0, base["server.utilization"]))
        width = metrics["average.response.time.upper"] - metrics["average.response.time.lower"]
        spread = width / (2 * max(metrics["average.response.time"], 1e-9))
        conf = base_conf / (1.0 + spread) if stable else 0.2 * base_conf
        if not stable:
            unstable += 1
        t = float(arrivals.times[i])
        minutes = (t - t_ref) / 60.0
        desc = f"{system} +{minutes:.0f} min: {plan.servers} servers, dimmer {plan.dimmer:g}" + (
            "" if stable else " — SATURATED (utilisation >= 1, queue grows without bound)"
        )
        states.append(PredictedState(t, metrics, round(conf, 6), desc))
        raw_states.append((t, raw))
    ctx.calibrator.remember(simulation_id, system, raw_states[:: max(1, len(raw_states) // 200)])
    return _States(states, np.array(rt_new), np.array(rt_base), u_new, u_base, unstable)


def estimate_impact(
    ctx: SimulationContext, plan: capacity.Plan, predicted: _States, horizon_sec: float
) -> tuple[Impact, np.ndarray]:
    """Cost of the server change, mean relative response-time gain, utilisation headroom.

    Also returns the mask of states where both response times are finite (unsaturated).
    """
    s = ctx.settings
    rt_new, rt_base = predicted.rt_new, predicted.rt_base
    finite = (rt_new < capacity.UNSTABLE_RT_MS) & (rt_base < capacity.UNSTABLE_RT_MS)
    if finite.any():
        perf = float(np.mean((rt_base[finite] - rt_new[finite]) / rt_base[finite]))
    else:
        perf = -1.0 if predicted.unstable else 0.0
    headroom = float(np.mean(predicted.u_base) - np.mean(predicted.u_new))
    hours = horizon_sec / 3600.0
    cost = plan.server_delta * s.cost_per_server_hour * hours
    cur = s.cost_currency
    impact = Impact(
        cost_impact=cost,
        performance_impact=perf,
        reliability_impact=headroom,
        cost_currency=cur,
        impact_description=(
            f"cost: {plan.server_delta:+d} servers × {s.cost_per_server_hour:g} {cur}/h × "
            f"{hours:g} h = {cost:+.2f} {cur}; "
            f"performance: mean relative response-time change vs. no action = {perf:+.1%} "
            "(positive = faster); "
            f"reliability: utilisation headroom change = {headroom:+.3f} (positive = more headroom)"
            + (
                f"; {predicted.unstable} of {len(predicted.states)} states saturated"
                if predicted.unstable
                else ""
            )
        ),
    )
    return impact, finite


def simulate_what_if(ctx: SimulationContext, request: SimulationRequest) -> SimulationResult:
    store = ctx.state.store
    s = ctx.settings
    picked = resolve_system(ctx.state, request, "simulate")
    if isinstance(picked, SimulationResult):
        return picked
    system, note = picked
    cal = capacity.calibrate_tier(store, system, s.capacity_window_sec)
    if cal is None:
        return SimulationResult(
            False,
            explanation=(
                f"no capacity model for {system}: a what-if needs an arrival rate "
                "(arrival.rate/request.rate or "
                f"basic/optional.throughput) and a server count (active.servers/servers); {system} "
                "has: "
                f"{', '.join(store.metrics_of(system)[:30])}. A forecast simulation still predicts "
                "its metrics."
            ),
            metadata={"system": system, "action_effects_modelled": "false"},
        )
    validate_actions(request.actions)
    plan = capacity.plan_actions(cal, list(request.actions))
    horizon_sec = max(60.0, request.horizon_minutes * 60.0)
    arrivals = apply_scenario(arrival_forecast(ctx, system, cal, horizon_sec), request.parameters)
    mismatch = not (0.5 <= cal.rt_factor <= 2.0)
    base_conf = base_confidence(cal, plan, arrivals.fitted)
    predicted = predict_states(ctx, system, cal, plan, arrivals, base_conf, request.simulation_id)
    states, unstable = predicted.states, predicted.unstable
    impact, finite = estimate_impact(ctx, plan, predicted, horizon_sec)
    expl = [
        f"what-if on {system}{note} with an M/G/c queue (Erlang C + Allen–Cunneen) calibrated from "
        f"the last {s.capacity_window_sec:g} s of telemetry"
    ]
    expl += plan.notes or ["no modelled actions: baseline only"]
    expl.append(f"calibration: {'; '.join(cal.notes)}")
    if mismatch:
        expl.append(
            "the queueing shape matches the observed response times only after a factor "
            f"{cal.rt_factor:.2f}: relative changes are more reliable than absolute values"
        )
    if cal.assumed:
        expl.append(f"assumed (missing telemetry): {', '.join(cal.assumed)}")
    expl.append(f"arrival rate over the horizon: {arrivals.method}")
    if plan.unknown:
        expl.append(
            f"no effect model for {', '.join(plan.unknown)}: these actions are NOT reflected in "
            "the prediction (low confidence)"
        )
    if unstable:
        expl.append(f"the configuration saturates in {unstable} of {len(states)} states")
    confidence = float(np.mean([st.confidence for st in states])) if states else 0.0
    last = states[-1].metrics if states else {}
    custom = {
        k: float(v)
        for k, v in cal.as_dict().items()
        if isinstance(v, (int, float)) and v is not None and math.isfinite(float(v))
    }
    rt_new, rt_base = predicted.rt_new, predicted.rt_base
    custom.update(
        {
            "predicted_avg_rt_ms_mean": float(np.mean(rt_new[finite]))
            if finite.any()
            else capacity.UNSTABLE_RT_MS,
            "baseline_avg_rt_ms_mean": float(np.mean(rt_base[finite]))
            if finite.any()
            else capacity.UNSTABLE_RT_MS,
            "servers_after": float(plan.servers),
            "dimmer_after": plan.dimmer,
            "saturated_states": float(unstable),
        }
    )
    return SimulationResult(
        True,
        states,
        round(confidence, 6),
        float(last.get("average.response.time.lower", 0.0)),
        float(last.get("average.response.time.upper", 0.0)),
        "; ".join(expl),
        impact,
        {
            "system": system,
            "model": "M/G/c (Erlang C, Allen-Cunneen)",
            "unknown_actions": ",".join(plan.unknown),
            "action_effects_modelled": str(not plan.unknown).lower(),
            "arrival_forecast": arrivals.method,
            "uncertainty_metric": "average.response.time",
            "interval_level": str(s.interval_level),
        },
        custom,
        max(1, len(request.actions)),
    )
