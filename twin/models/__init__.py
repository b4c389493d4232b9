"""World models: the reasoning layer. Each implements ``WorldModel`` over ``TwinState``.

The public surface for people writing or embedding a model: the interface, the domain
types it speaks, the optional capabilities a composite model looks for, the settings
parser, and the registry.
"""

from twin.models.base import WorldModel
from twin.models.capabilities import (
    AnomalyReporter,
    ForecastConsumer,
    LatencyBounded,
    forecaster_from_model,
)
from twin.models.domain import (
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
from twin.models.registry import available_models, create_model, register_model
from twin.models.settings import parse_settings

__all__ = [
    "Action",
    "AnomalyReporter",
    "DiagnosisRequest",
    "DiagnosisResult",
    "EventBatch",
    "ForecastConsumer",
    "Health",
    "Hypothesis",
    "Impact",
    "LatencyBounded",
    "PredictedState",
    "QueryRequest",
    "QueryResult",
    "SimulationRequest",
    "SimulationResult",
    "WorldModel",
    "available_models",
    "create_model",
    "forecaster_from_model",
    "parse_settings",
    "register_model",
]
