"""The ``WorldModel`` interface and the domain types it speaks.

Models never see protobuf: the service maps proto ⇄ these dataclasses at the
edge, so a model can be driven in process (evaluations, tests) through exactly
the code path the RPCs use. ``current_state`` and ``historical`` queries are
answered from the store for every model (``state_queries``); models add
predictions, diagnoses and natural language on top.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twin.core.events import Point
from twin.core.state import ActionRecord, CalibrationRecord, TwinState


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


class WorldModel(abc.ABC):
    """A pluggable world model over the shared ``TwinState``.

    Lifecycle: ``initialize`` → (``update`` | ``query`` | ``simulate`` | ``diagnose`` |
    ``calibrate``)* → ``shutdown``. ``update`` runs on the ingestion path after each
    batch is stored, so it must be cheap (amortised O(1) per point); heavy work
    (fitting) belongs in background tasks the model owns and cancels in ``shutdown``.
    """

    name: ClassVar[str] = "abstract"
    version: ClassVar[str] = "0"

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
        """Problems ``--validate-only`` reports before start (e.g. a missing API key)."""
        return []

    def __init__(self, state: TwinState, settings: Mapping[str, Any] | None = None) -> None:
        self.state = state
        self.settings: dict[str, Any] = dict(settings or {})
        self.initialized = False

    async def initialize(self) -> None:
        self.initialized = True

    async def shutdown(self) -> None:
        self.initialized = False

    def update(self, batch: EventBatch) -> None:  # noqa: B027 - optional hook
        """Sees every applied batch (points already in the store)."""

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        """Corrects the model from a (predicted, actual) pair; returns what changed."""
        return {}

    async def query(self, request: QueryRequest) -> QueryResult:
        from twin.models import state_queries

        return state_queries.answer(self.state, request)

    @abc.abstractmethod
    async def simulate(self, request: SimulationRequest) -> SimulationResult: ...

    @abc.abstractmethod
    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult: ...

    async def health(self) -> Health:
        status = "healthy" if self.initialized else "not_initialized"
        return Health(status, [], {}, self.name, self.version)

    async def reload(self, settings: Mapping[str, Any] | None = None) -> None:
        """Re-reads settings and rebuilds derived state (keeps the store)."""
        if settings is not None:
            self.settings = dict(settings)
        await self.shutdown()
        await self.initialize()

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Drops derived state after ``reset_state`` emptied the store."""

    def metrics(self) -> dict[str, float]:
        """Model-specific figures for ``get_metrics`` (token usage, fits, ...)."""
        return {}
