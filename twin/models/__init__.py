"""World models: the reasoning layer. Each implements ``WorldModel`` over ``TwinState``."""

from twin.models.base import WorldModel
from twin.models.domain import (
    Action,
    DiagnosisRequest,
    DiagnosisResult,
    Health,
    Hypothesis,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.registry import available_models, create_model, register_model

__all__ = [
    "Action",
    "DiagnosisRequest",
    "DiagnosisResult",
    "Health",
    "Hypothesis",
    "Impact",
    "PredictedState",
    "QueryRequest",
    "QueryResult",
    "SimulationRequest",
    "SimulationResult",
    "WorldModel",
    "available_models",
    "create_model",
    "register_model",
]
