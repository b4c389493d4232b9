"""The ``mock`` world model: deterministic answers for tests and demos.

Unlike the original's mock, simulations return real future states: the latest
values of the target system, with simple closed-form effects of the actions
(servers share load, the dimmer scales optional content) held over the horizon.
No randomness, no wall clock: the same store gives the same answer.
"""

from __future__ import annotations

import math

import numpy as np

from twin.core.events import normalise_name
from twin.models.base import WorldModel
from twin.models.domain import (
    Action,
    DiagnosisRequest,
    DiagnosisResult,
    Hypothesis,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.state_queries import requested_system

DEFAULT_STATE = {
    "active.servers": 3.0,
    "server.utilization": 0.6,
    "average.response.time": 200.0,
    "arrival.rate": 50.0,
    "dimmer": 1.0,
}
KNOWN_ACTIONS = {"ADD_SERVER", "REMOVE_SERVER", "SET_DIMMER", "SCALE_UP", "SCALE_DOWN"}


def _count(action: Action, default: float = 1.0) -> float:
    for key in ("count", "servers", "delta", "value"):
        if key in action.params:
            try:
                return float(action.params[key])
            except ValueError:
                return default
    return default


def apply_action(metrics: dict[str, float], action: Action) -> tuple[dict[str, float], str]:
    """Closed-form effect of one action on a metrics dict; returns (new metrics, note)."""
    out = dict(metrics)
    kind = action.action_type.upper()
    servers_key = next((k for k in out if k in ("active.servers", "servers")), None)
    servers = (
        out.get(servers_key, DEFAULT_STATE["active.servers"])
        if servers_key
        else DEFAULT_STATE["active.servers"]
    )
    if kind in ("ADD_SERVER", "REMOVE_SERVER", "SCALE_UP", "SCALE_DOWN"):
        delta = _count(action) * (1 if kind in ("ADD_SERVER", "SCALE_UP") else -1)
        new = max(1.0, servers + delta)
        ratio = servers / new
        for k in list(out):
            if "utilization" in k or "response.time" in k:
                out[k] = out[k] * ratio
        for k in {
            servers_key or "active.servers",
            *(k for k in out if k in ("active.servers", "servers")),
        }:
            out[k] = new
        return out, f"{kind} {delta:+g} servers ({servers:g} → {new:g})"
    if kind == "SET_DIMMER":
        level = min(1.0, max(0.0, _count(action, 1.0)))
        old = out.get("dimmer", 1.0)
        for k in list(out):
            if k.startswith("optional.") and old > 0:
                out[k] = out[k] * level / old
        out["dimmer"] = level
        return out, f"dimmer {old:g} → {level:g}"
    return out, f"{kind}: no effect model in the mock"


class MockWorldModel(WorldModel):
    name = "mock"
    version = "1.0.0"

    async def query(self, request: QueryRequest) -> QueryResult:
        if request.query_type != "natural_language":
            return await super().query(request)
        latest = self.state.store.latest(requested_system(request.parameters))
        n = sum(len(v) for v in latest.values())
        return QueryResult(
            True,
            {"question": request.content, "systems": sorted(latest), "series": n},
            0.5,
            f"mock model: {n} series known; it does not interpret questions",
        )

    def _base(self, system: str | None) -> tuple[str, dict[str, float], bool]:
        store = self.state.store
        sources = store.sources()
        if system is None and sources:
            system = "swim" if "swim" in sources else sources[0]
        latest = store.latest(system).get(system or "", {})
        metrics = {
            m: float(e["value"])
            for m, e in latest.items()
            if isinstance(e["value"], float) and math.isfinite(e["value"])
        }
        if metrics:
            return system or "", metrics, True
        return system or "system", dict(DEFAULT_STATE), False

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        if request.simulation_type == "compare":
            from twin.models.plans.compare import compare_by_what_if

            now = self.state.store.newest_time
            return await compare_by_what_if(self.simulate, request, self.settings, now)
        target = next((a.target for a in request.actions if a.target), None) or requested_system(
            request.parameters
        )
        system, metrics, observed = self._base(target)
        notes = []
        after = metrics
        for action in request.actions:
            after, note = apply_action(after, action)
            notes.append(note)
        step = max(1, int(request.parameters.get("step_minutes", "5") or 5))
        now = request.timestamp if request.timestamp is not None else self.state.store.newest_time
        if not math.isfinite(now):
            now = 0.0
        horizon = request.horizon_minutes
        steps = max(1, math.ceil(horizon / step)) if horizon else 1
        states = []
        for i in range(1, steps + 1):
            minutes = min(horizon, i * step)
            conf = round(0.8 * math.exp(-minutes / 240.0), 6)
            states.append(
                PredictedState(now + minutes * 60.0, dict(after), conf, f"{system} +{minutes} min")
            )
        unknown = [
            a.action_type for a in request.actions if a.action_type.upper() not in KNOWN_ACTIONS
        ]
        util = [v for k, v in after.items() if "utilization" in k]
        perf = sum(metrics.get(k, 0) - v for k, v in after.items() if "response.time" in k)
        impact = Impact(
            cost_impact=sum(
                _count(a) * (1 if a.action_type.upper() in ("ADD_SERVER", "SCALE_UP") else -1)
                for a in request.actions
                if a.action_type.upper() in KNOWN_ACTIONS - {"SET_DIMMER"}
            ),
            performance_impact=perf,
            reliability_impact=0.0 if not util else float(1.0 - max(util)),
            impact_description="; ".join(notes) or "no actions: state held",
        )
        confidence = 0.3 if unknown or not observed else 0.6
        spread = 0.1 * (1 + horizon / 60.0)
        return SimulationResult(
            True,
            states,
            confidence,
            confidence * (1 - spread),
            min(1.0, confidence * (1 + spread)),
            (
                "mock simulation from "
                + ("observed" if observed else "default")
                + f" state of {system}; "
                + "; ".join(notes)
            ).strip("; "),
            impact,
            {
                "system": system,
                "observed": str(observed).lower(),
                "unknown_actions": ",".join(unknown),
            },
        )

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        system = requested_system(request.context)
        scored = []
        for s in self.state.store:
            if system and s.source != system or len(s) < 3:
                continue
            _, v = s.tail(500)
            ref = v[:-1]
            sd = float(np.std(ref)) or 1e-9
            z = abs(float(v[-1]) - float(np.mean(ref))) / sd
            scored.append((z, s.source, s.name, float(v[-1])))
        if not scored:
            return DiagnosisResult(
                False,
                explanation="no telemetry to diagnose" + (f" for {system!r}" if system else ""),
            )
        scored.sort(key=lambda x: (-x[0], x[1], x[2]))
        top = scored[:5]
        total = sum(z for z, *_ in top) or 1.0
        hyps = [
            Hypothesis(
                f"{src}/{normalise_name(name)} deviates from its history",
                round(0.9 * z / total, 6),
                f"latest value {value:g} is {z:.1f} standard deviations from the mean",
                [f"{src}/{name}={value:g}", f"z={z:.2f}"],
                i + 1,
            )
            for i, (z, src, name, value) in enumerate(top)
        ]
        return DiagnosisResult(
            True,
            hyps,
            " -> ".join(f"{h.hypothesis.split(' ')[0]}" for h in hyps[:3]),
            hyps[0].probability,
            "mock diagnosis: series ranked by the deviation of their latest value",
            [h.evidence[0] for h in hyps],
        )
