"""Plan comparison in the domain: the candidates a planner sends and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field

from twin.models.base import Action, Impact, PredictedState

BASELINE_PLAN_ID = "do_nothing"
MAX_PLANS = 32


@dataclass(slots=True)
class CandidatePlan:
    plan_id: str
    actions: list[Action] = field(default_factory=list)


@dataclass(slots=True)
class PlanOutcome:
    """One plan's predicted future, its utility and its rank among the candidates (1 = best)."""

    plan_id: str
    rank: int = 0
    utility: float = 0.0
    slo_breach_probability: float = 0.0
    future_states: list[PredictedState] = field(default_factory=list)
    impact: Impact | None = None
    confidence: float = 0.0
    explanation: str = ""
    actions: list[Action] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # value, penalty, cost, ...
