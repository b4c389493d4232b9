"""The domain types every world model speaks: requests, answers, health, batches.

Models never see protobuf: the service maps proto ⇄ these dataclasses at the edge, so
a model can be driven in process (evaluations, tests) through exactly the code path
the RPCs use. They live apart from ``WorldModel`` so that helpers (the store-backed
queries, fusion, mapping) can use them without importing the model interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twin.core.events import Point
from twin.core.state import ActionRecord, CalibrationRecord

__all__ = [
    "HEALTH_STATUSES",
    "Action",
    "CandidatePlan",
    "DiagnosisRequest",
    "DiagnosisResult",
    "EventBatch",
    "Health",
    "Hypothesis",
    "Impact",
    "PlanOutcome",
    "PredictedState",
    "QueryRequest",
    "QueryResult",
    "SimulationRequest",
    "SimulationResult",
]


@dataclass(slots=True)
class QueryRequest:
    query_id: str
    query_type: str
    content: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    timestamp: float | None = None


@dataclass(slots=True)
class QueryResult:
    success: bool
    result: Any = None  # JSON-serialisable; the service encodes it
    confidence: float = 0.0
    explanation: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Action:
    action_type: str
    target: str = ""
    params: dict[str, str] = field(default_factory=dict)
    action_id: str = ""
    priority: str = "normal"
    timeout: float = 0.0


@dataclass(slots=True)
class SimulationRequest:
    simulation_id: str
    simulation_type: str
    actions: list[Action] = field(default_factory=list)
    horizon_minutes: int = 60
    parameters: dict[str, str] = field(default_factory=dict)
    timestamp: float | None = None
    plans: list[CandidatePlan] = field(default_factory=list)  # "compare" only


@dataclass(slots=True)
class CandidatePlan:
    """One plan of a "compare" simulation (``plan_id`` unique; "do_nothing" reserved)."""

    plan_id: str
    actions: list[Action] = field(default_factory=list)


@dataclass(slots=True)
class PredictedState:
    t: float
    metrics: dict[str, float]
    confidence: float
    description: str = ""


@dataclass(slots=True)
class Impact:
    cost_impact: float = 0.0
    performance_impact: float = 0.0
    reliability_impact: float = 0.0
    cost_currency: str = "USD"
    impact_description: str = ""


@dataclass(slots=True)
class SimulationResult:
    success: bool
    future_states: list[PredictedState] = field(default_factory=list)
    confidence: float = 0.0
    uncertainty_lower: float = 0.0
    uncertainty_upper: float = 0.0
    explanation: str = ""
    impact: Impact | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    custom_metrics: dict[str, float] = field(default_factory=dict)
    scenarios_processed: int = 1
    plan_outcomes: list[PlanOutcome] = field(default_factory=list)  # "compare" only, best first


@dataclass(slots=True)
class PlanOutcome:
    """A plan's predicted future in a "compare" simulation, with its rank (1 = best)."""

    plan_id: str
    rank: int = 0
    utility: float = 0.0
    slo_breach_probability: float = 0.0
    future_states: list[PredictedState] = field(default_factory=list)
    impact: Impact | None = None
    confidence: float = 0.0
    explanation: str = ""
    actions: list[Action] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # value, penalty, cost


@dataclass(slots=True)
class DiagnosisRequest:
    diagnosis_id: str
    anomaly_description: str = ""
    timestamp: float | None = None
    context: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Hypothesis:
    hypothesis: str
    probability: float
    reasoning: str = ""
    evidence: list[str] = field(default_factory=list)
    rank: int = 0


@dataclass(slots=True)
class DiagnosisResult:
    success: bool
    hypotheses: list[Hypothesis] = field(default_factory=list)
    causal_chain: str = ""
    confidence: float = 0.0
    explanation: str = ""
    supporting_evidence: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


HEALTH_STATUSES = ("healthy", "degraded", "unhealthy", "not_initialized")


@dataclass(slots=True)
class Health:
    status: str
    issues: list[str] = field(default_factory=list)
    performance_metrics: dict[str, float] = field(default_factory=dict)
    model_type: str = ""
    model_version: str = ""


@dataclass(slots=True)
class EventBatch:
    """What one ingestion batch applied to the state, handed to the model afterwards."""

    points: Sequence[Point] = ()
    actions: Sequence[ActionRecord] = ()
    calibrations: Sequence[CalibrationRecord] = ()
