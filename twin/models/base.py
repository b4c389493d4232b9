"""The ``WorldModel`` interface.

Lifecycle and the four RPC-facing calls every model implements. The domain types it
speaks live in ``twin.models.domain`` (re-exported here for existing imports);
``current_state`` and ``historical`` queries are answered from the store for every
model (``state_queries``); models add predictions, diagnoses and natural language.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from twin.core.state import CalibrationRecord, TwinState
from twin.models import state_queries
from twin.models.domain import (
    HEALTH_STATUSES,
    Action,
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Health,
    Hypothesis,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)

__all__ = [
    "HEALTH_STATUSES",
    "Action",
    "DiagnosisRequest",
    "DiagnosisResult",
    "EventBatch",
    "Health",
    "Hypothesis",
    "Impact",
    "PredictedState",
    "QueryRequest",
    "QueryResult",
    "SimulationRequest",
    "SimulationResult",
    "WorldModel",
]


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
    def validate_settings(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str]
    ) -> list[str]:
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
        return await state_queries.answer(self.state, request)

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
