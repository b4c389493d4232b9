"""Plan comparison for any world model that can answer a what-if.

``compare_by_what_if`` asks the model one ``what_if`` per plan (and a ``scenario``
without actions as the "do nothing" baseline, under the same parameters), then scores
every answer with the same SLOs and utility as the plan engine, reading the states'
metrics through the system's roles. The statistical model compares natively (one
calibration, vectorised); the mock uses this; so can any plugin model.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from twin.models.domain import (
    CandidatePlan,
    Impact,
    PlanOutcome,
    PredictedState,
    SimulationRequest,
    SimulationResult,
)
from twin.models.plans import utility
from twin.models.plans.roles import RoleMap, detect, system_settings
from twin.models.plans.types import BASELINE_PLAN_ID

Simulate = Callable[[SimulationRequest], Awaitable[SimulationResult]]


def roles_of_states(system: str, states: Sequence[PredictedState]) -> RoleMap:
    names = sorted(
        {
            k
            for s in states
            for k in s.metrics
            if not k.endswith((".lower", ".upper")) and not k.startswith("baseline.")
        }
    )
    last = states[-1].metrics if states else {}
    return detect(system, [(n, "unknown", last.get(n)) for n in names])


def score_states(
    system: str,
    states: Sequence[PredictedState],
    now: float,
    obj: utility.Objectives,
    roles: RoleMap | None = None,
    sigma: float = 0.1,
) -> tuple[float, dict[str, float], float]:
    """(utility, parts, mean SLO breach probability) of a trajectory of predicted states."""
    if not states:
        return 0.0, {"value": 0.0, "penalty": 0.0, "cost": 0.0}, 0.0
    roles = roles or roles_of_states(system, states)
    times = np.array([s.t for s in states])
    dt = np.maximum(
        times - np.concatenate(([now if math.isfinite(now) else times[0]], times[:-1])), 0.0
    )

    def col(role: str) -> np.ndarray | None:
        b = roles.get(role)
        if b is None:
            return None
        vals = [s.metrics.get(b.metric) for s in states]
        if any(v is None for v in vals):
            return None
        return np.array(vals, dtype=float) * b.scale

    lat = col("latency_tail") if obj.latency_stat == "tail" else None
    lat = lat if lat is not None else col("latency")
    load = col("load") if roles.has("load") else col("throughput")
    err = col("error_rate")
    quality = col("quality")
    if quality is None and roles.metric("knob") == "dimmer":
        quality = col("knob")
    units = col("capacity")
    n = len(states)
    p = utility.breach_probability(lat, sigma, obj, err, 0.002)
    if not p.shape[0]:
        p = np.zeros(n)
    u, parts = utility.utility(
        dt,
        load if load is not None else np.zeros(n),
        err,
        quality,
        units if units is not None else np.zeros(n),
        p,
        obj,
    )
    return u, parts, float(np.mean(p))


async def compare_by_what_if(
    simulate: Simulate,
    request: SimulationRequest,
    settings: Mapping[str, Any],
    now: float,
) -> SimulationResult:
    """A compare answer (``plan_outcomes`` ranked by utility) from per-plan what-ifs."""
    plans = [CandidatePlan(BASELINE_PLAN_ID, [])] + list(request.plans)
    answers: list[tuple[CandidatePlan, SimulationResult]] = []
    for plan in plans:
        kind = "what_if" if plan.actions else "scenario"
        sub = SimulationRequest(
            f"{request.simulation_id}:{plan.plan_id}",
            kind,
            list(plan.actions),
            request.horizon_minutes,
            dict(request.parameters),
            request.timestamp,
        )
        answers.append((plan, await simulate(sub)))
    good = [(p, r) for p, r in answers if r.success]
    if not good:
        why = "; ".join(f"{p.plan_id}: {r.explanation}" for p, r in answers)
        return SimulationResult(False, explanation=f"no plan could be simulated ({why})")
    system = next(
        (r.metadata.get("system") for _, r in good if r.metadata.get("system")), None
    ) or request.parameters.get("system", "")
    roles = roles_of_states(system, good[0][1].future_states)
    obj = utility.objectives(
        request.parameters, system_settings(settings, system), settings, roles.has("latency_tail")
    )
    outcomes = []
    for plan, res in good:
        u, parts, p = score_states(system, res.future_states, now, obj, roles)
        text = (
            f"{plan.plan_id}: utility {u:.4g} (value {parts['value']:.4g} - penalty "
            f"{parts['penalty']:.4g} - cost {parts['cost']:.4g}), SLO breach probability "
            f"{p:.1%}; {res.explanation}"
        )
        outcomes.append(
            PlanOutcome(
                plan.plan_id,
                0,
                u,
                p,
                res.future_states,
                res.impact or Impact(),
                res.confidence,
                text,
                list(plan.actions),
                parts,
            )
        )
    rank(outcomes)
    best = min(outcomes, key=lambda o: o.rank)
    failed = [f"{p.plan_id}: {r.explanation}" for p, r in answers if not r.success]
    expl = (
        f"compared {len(request.plans)} plan(s) and '{BASELINE_PLAN_ID}' by one what-if each; "
        f"best: {best.plan_id}; {obj.describe()}"
    )
    if failed:
        expl += "; not simulated: " + "; ".join(failed)
    result = SimulationResult(
        True,
        best.future_states,
        best.confidence,
        0.0,
        0.0,
        expl,
        best.impact,
        {"system": system, "best_plan": best.plan_id, "plans": str(len(outcomes))},
        {"best_utility": best.utility},
        len(outcomes),
    )
    result.plan_outcomes = outcomes
    return result


def rank(outcomes: list[PlanOutcome]) -> None:
    """Ranks by utility (ties: fewer actions first, then the given order)."""
    order = sorted(
        range(len(outcomes)), key=lambda i: (-outcomes[i].utility, len(outcomes[i].actions), i)
    )
    for r, i in enumerate(order, 1):
        outcomes[i].rank = r
