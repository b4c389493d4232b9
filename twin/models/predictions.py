"""From a ``SimulationResult`` to the prediction ledger, for every world model.

The runtime calls ``calibrate_and_record`` once per answered simulation, whichever
model answered, so all models are scored the same way. Two things happen:

1. **Intervals are recalibrated** (forecast, what-if and plan outcomes): each
   ``<metric>.lower/.upper`` is widened or narrowed around ``<metric>`` by the factor
   the ledger learned from the measured coverage of earlier, already scored
   predictions of that kind on that system (per lead-time bucket; 1 until learned).
   The response says so in ``metadata.interval_calibration``.
2. **The prediction is recorded** with the raw (model) interval and the applied
   factor, so learning never feeds on its own corrections.

State metrics are read by name: ``<metric>`` is a prediction, ``<metric>.lower`` and
``<metric>.upper`` its interval, ``baseline.<metric>`` the "do nothing" prediction of a
what-if. Metrics that are not series of the system are kept in the answer but cannot
be scored (the report says which).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twin.core.ledger import PredictionLedger, TrackInput
from twin.models.domain import PredictedState, SimulationRequest, SimulationResult

Backtest = Callable[[str, str], tuple[float, float] | None]
MAX_TRACKS = 16
DEFAULT_LEVEL = 0.95


def _system_of(request: SimulationRequest, result: SimulationResult) -> str:
    sys_ = (
        result.metadata.get("system")
        or request.parameters.get("system")
        or request.parameters.get("source")
    )
    if not sys_:
        sys_ = next((a.target for a in request.actions if a.target), "")
    return str(sys_ or "")


def is_hypothetical(request: SimulationRequest) -> bool:
    """A what-if under an invented load (scenario, load factor, fixed rate) is not checkable."""
    p = request.parameters
    if request.simulation_type == "scenario":
        return True
    if (p.get("scenario") or "baseline").strip().lower() not in ("", "baseline"):
        return True
    try:
        if float(p.get("load_factor") or 1.0) != 1.0:
            return True
    except ValueError:
        return True
    return bool((p.get("arrival_rate") or "").strip())


def _level(result: SimulationResult) -> float:
    try:
        lv = float(result.metadata.get("interval_level", DEFAULT_LEVEL))
    except ValueError:
        return DEFAULT_LEVEL
    return lv if 0.0 < lv < 1.0 else DEFAULT_LEVEL


def _tracks(states: Sequence[PredictedState]) -> list[TrackInput]:
    if not states:
        return []
    names: list[str] = []
    seen: set[str] = set()
    for st in states[:4]:
        for k in st.metrics:
            if k.endswith((".lower", ".upper")) or k.startswith("baseline.") or k in seen:
                continue
            seen.add(k)
            names.append(k)
    out = []
    for m in names[:MAX_TRACKS]:
        rows = [
            (
                st.t,
                st.metrics[m],
                st.metrics.get(f"{m}.lower"),
                st.metrics.get(f"{m}.upper"),
                st.metrics.get(f"baseline.{m}"),
            )
            for st in states
            if m in st.metrics
        ]
        if not rows:
            continue
        t = np.fromiter((r[0] for r in rows), float, len(rows))
        mean = np.fromiter((r[1] for r in rows), float, len(rows))
        has_iv = all(r[2] is not None and r[3] is not None for r in rows)
        has_base = all(r[4] is not None for r in rows)
        out.append(
            TrackInput(
                m,
                t,
                mean,
                np.fromiter((r[2] for r in rows), float, len(rows)) if has_iv else None,
                np.fromiter((r[3] for r in rows), float, len(rows)) if has_iv else None,
                baseline=np.fromiter((r[4] for r in rows), float, len(rows)) if has_base else None,
            )
        )
    return out


def _calibrate(
    ledger: PredictionLedger,
    store: Any,
    system: str,
    kind: str,
    level: float,
    states: Sequence[PredictedState],
    tracks: list[TrackInput],
) -> str:
    """Rescales the states' intervals in place; returns the note for the response."""
    lo_s, hi_s, specificity, n = math.inf, -math.inf, 0, 0
    for tr in tracks:
        if tr.lower is None or tr.upper is None:
            continue
        info = ledger.series_info(store, system, tr.metric)
        if info is None:
            continue
        lead = (tr.t - info.last_t) / max(info.step, 1e-9)
        scales, spec = ledger.interval_scales(system, kind, tr.metric, lead, level)
        tr.applied_scale = scales
        specificity = max(specificity, spec)
        if spec == 0:
            continue
        n += 1
        lo_s, hi_s = min(lo_s, float(scales.min())), max(hi_s, float(scales.max()))
        by_t = dict(zip(tr.t.tolist(), scales.tolist()))
        m, ml, mu = tr.metric, f"{tr.metric}.lower", f"{tr.metric}.upper"
        for st in states:
            s = by_t.get(st.t)
            if s is None or m not in st.metrics or ml not in st.metrics:
                continue
            mean = st.metrics[m]
            st.metrics[ml] = mean - (mean - st.metrics[ml]) * s
            st.metrics[mu] = mean + (st.metrics[mu] - mean) * s
    if not n:
        return (
            "none yet (no scored predictions of this kind on this system): intervals as the model "
            "gave them"
        )
    where = {
        1: f"all {kind} predictions",
        2: f"{kind} predictions on {system}",
        3: f"{kind} predictions of these metrics on {system}",
    }[specificity]
    span = f"×{lo_s:.3g}" if abs(hi_s - lo_s) < 1e-3 else f"×{lo_s:.3g}–{hi_s:.3g}"
    return f"{span} from the measured coverage of {where}"


def calibrate_and_record(
    ledger: PredictionLedger,
    store: Any,
    request: SimulationRequest,
    result: SimulationResult,
    model_name: str,
    backtest: Backtest | None = None,
) -> int:
    """Recalibrates the result's intervals and records it; returns predictions recorded."""
    if not result.success:
        return 0
    system = _system_of(request, result)
    if not system:
        return 0
    level = _level(result)
    st = request.simulation_type
    if st == "compare":
        return _record_plans(ledger, store, request, result, model_name, system, level)
    if st == "forecast":
        kind = "forecast"
    elif st in ("what_if", "scenario"):
        kind = "scenario" if is_hypothetical(request) else "what_if"
    else:
        return 0
    tracks = _tracks(result.future_states)
    if kind != "scenario" and ledger.calibrate:
        result.metadata["interval_calibration"] = _calibrate(
            ledger, store, system, kind, level, result.future_states, tracks
        )
        _refresh_uncertainty(result)
    if backtest is not None and kind == "forecast":
        for tr in tracks:
            bt = backtest(system, tr.metric)
            if bt is not None:
                tr.backtest_mae, tr.backtest_horizon_sec = bt
    actions = [(a.action_type, a.target or system) for a in request.actions]
    ledger.record(
        store,
        request.simulation_id,
        system,
        model_name,
        kind,
        tracks,
        level,
        actions,
        confidence=result.confidence,
    )
    return 1


def _refresh_uncertainty(result: SimulationResult) -> None:
    m = result.metadata.get("uncertainty_metric")
    if not m or not result.future_states:
        return
    last = result.future_states[-1].metrics
    if f"{m}.lower" in last and f"{m}.upper" in last:
        result.uncertainty_lower = float(last[f"{m}.lower"])
        result.uncertainty_upper = float(last[f"{m}.upper"])


def _record_plans(
    ledger: PredictionLedger,
    store: Any,
    request: SimulationRequest,
    result: SimulationResult,
    model_name: str,
    system: str,
    level: float,
) -> int:
    """One ``plan`` prediction per compare outcome (the plans of the request give the actions)."""
    plans = {
        getattr(p, "plan_id", ""): list(getattr(p, "actions", []) or [])
        for p in getattr(request, "plans", None) or []
    }
    hypothetical = is_hypothetical(request)
    n = 0
    for out in getattr(result, "plan_outcomes", None) or []:
        pid = str(getattr(out, "plan_id", "") or "")
        states = list(getattr(out, "future_states", []) or [])
        tracks = _tracks(states)
        kind = "scenario" if hypothetical else "plan"
        if kind == "plan" and ledger.calibrate:
            note = _calibrate(ledger, store, system, kind, level, states, tracks)
            md = getattr(out, "metadata", None)
            if isinstance(md, dict):
                md["interval_calibration"] = note
        actions = [(a.action_type, a.target or system) for a in plans.get(pid, [])]
        ledger.record(
            store,
            f"{request.simulation_id}/{pid}",
            system,
            model_name,
            kind,
            tracks,
            level,
            actions,
            plan_id=pid,
            confidence=float(getattr(out, "confidence", math.nan)),
        )
        n += 1
    return n
