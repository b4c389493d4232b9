from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryRequest(_message.Message):
    __slots__ = ("query_id", "query_type", "query_content", "parameters", "timestamp")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUERY_CONTENT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query_type: str
    query_content: str
    parameters: _containers.ScalarMap[str, str]
    timestamp: str
    def __init__(self, query_id: _Optional[str] = ..., query_type: _Optional[str] = ..., query_content: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("query_id", "success", "result", "confidence", "explanation", "timestamp", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    success: bool
    result: str
    confidence: float
    explanation: str
    timestamp: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, query_id: _Optional[str] = ..., success: _Optional[bool] = ..., result: _Optional[str] = ..., confidence: _Optional[float] = ..., explanation: _Optional[str] = ..., timestamp: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SimulationRequest(_message.Message):
    __slots__ = ("simulation_id", "simulation_type", "actions", "horizon_minutes", "parameters", "timestamp", "plans")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SIMULATION_ID_FIELD_NUMBER: _ClassVar[int]
    SIMULATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    simulation_id: str
    simulation_type: str
    actions: _containers.RepeatedCompositeFieldContainer[ControlAction]
    horizon_minutes: int
    parameters: _containers.ScalarMap[str, str]
    timestamp: str
    plans: _containers.RepeatedCompositeFieldContainer[CandidatePlan]
    def __init__(self, simulation_id: _Optional[str] = ..., simulation_type: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ControlAction, _Mapping]]] = ..., horizon_minutes: _Optional[int] = ..., parameters: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[str] = ..., plans: _Optional[_Iterable[_Union[CandidatePlan, _Mapping]]] = ...) -> None: ...

class CandidatePlan(_message.Message):
    __slots__ = ("plan_id", "actions")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    actions: _containers.RepeatedCompositeFieldContainer[ControlAction]
    def __init__(self, plan_id: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ControlAction, _Mapping]]] = ...) -> None: ...

class ControlAction(_message.Message):
    __slots__ = ("action_id", "action_type", "target", "params", "priority", "timeout")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    action_type: str
    target: str
    params: _containers.ScalarMap[str, str]
    priority: str
    timeout: float
    def __init__(self, action_id: _Optional[str] = ..., action_type: _Optional[str] = ..., target: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., priority: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class SimulationResponse(_message.Message):
    __slots__ = ("simulation_id", "success", "future_states", "metrics", "confidence", "uncertainty_lower", "uncertainty_upper", "explanation", "impact_estimates", "timestamp", "metadata", "plan_outcomes")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SIMULATION_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FUTURE_STATES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_LOWER_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_UPPER_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    IMPACT_ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PLAN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    simulation_id: str
    success: bool
    future_states: _containers.RepeatedCompositeFieldContainer[PredictedState]
    metrics: SimulationMetrics
    confidence: float
    uncertainty_lower: float
    uncertainty_upper: float
    explanation: str
    impact_estimates: CostPerformanceReliability
    timestamp: str
    metadata: _containers.ScalarMap[str, str]
    plan_outcomes: _containers.RepeatedCompositeFieldContainer[PlanOutcome]
    def __init__(self, simulation_id: _Optional[str] = ..., success: _Optional[bool] = ..., future_states: _Optional[_Iterable[_Union[PredictedState, _Mapping]]] = ..., metrics: _Optional[_Union[SimulationMetrics, _Mapping]] = ..., confidence: _Optional[float] = ..., uncertainty_lower: _Optional[float] = ..., uncertainty_upper: _Optional[float] = ..., explanation: _Optional[str] = ..., impact_estimates: _Optional[_Union[CostPerformanceReliability, _Mapping]] = ..., timestamp: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., plan_outcomes: _Optional[_Iterable[_Union[PlanOutcome, _Mapping]]] = ...) -> None: ...

class PlanOutcome(_message.Message):
    __slots__ = ("plan_id", "rank", "utility", "slo_breach_probability", "future_states", "impact_estimates", "confidence", "explanation")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    UTILITY_FIELD_NUMBER: _ClassVar[int]
    SLO_BREACH_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FUTURE_STATES_FIELD_NUMBER: _ClassVar[int]
    IMPACT_ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    rank: int
    utility: float
    slo_breach_probability: float
    future_states: _containers.RepeatedCompositeFieldContainer[PredictedState]
    impact_estimates: CostPerformanceReliability
    confidence: float
    explanation: str
    def __init__(self, plan_id: _Optional[str] = ..., rank: _Optional[int] = ..., utility: _Optional[float] = ..., slo_breach_probability: _Optional[float] = ..., future_states: _Optional[_Iterable[_Union[PredictedState, _Mapping]]] = ..., impact_estimates: _Optional[_Union[CostPerformanceReliability, _Mapping]] = ..., confidence: _Optional[float] = ..., explanation: _Optional[str] = ...) -> None: ...

class PredictedState(_message.Message):
    __slots__ = ("timestamp", "metrics", "confidence", "description")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    timestamp: str
    metrics: _containers.ScalarMap[str, float]
    confidence: float
    description: str
    def __init__(self, timestamp: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., confidence: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class SimulationMetrics(_message.Message):
    __slots__ = ("execution_time_sec", "scenarios_processed", "average_confidence", "custom_metrics")
    class CustomMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EXECUTION_TIME_SEC_FIELD_NUMBER: _ClassVar[int]
    SCENARIOS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_METRICS_FIELD_NUMBER: _ClassVar[int]
    execution_time_sec: float
    scenarios_processed: int
    average_confidence: float
    custom_metrics: _containers.ScalarMap[str, float]
    def __init__(self, execution_time_sec: _Optional[float] = ..., scenarios_processed: _Optional[int] = ..., average_confidence: _Optional[float] = ..., custom_metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CostPerformanceReliability(_message.Message):
    __slots__ = ("cost_impact", "performance_impact", "reliability_impact", "cost_currency", "impact_description")
    COST_IMPACT_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_IMPACT_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_IMPACT_FIELD_NUMBER: _ClassVar[int]
    COST_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    IMPACT_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    cost_impact: float
    performance_impact: float
    reliability_impact: float
    cost_currency: str
    impact_description: str
    def __init__(self, cost_impact: _Optional[float] = ..., performance_impact: _Optional[float] = ..., reliability_impact: _Optional[float] = ..., cost_currency: _Optional[str] = ..., impact_description: _Optional[str] = ...) -> None: ...

class DiagnosisRequest(_message.Message):
    __slots__ = ("diagnosis_id", "anomaly_description", "timestamp", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIAGNOSIS_ID_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    diagnosis_id: str
    anomaly_description: str
    timestamp: str
    context: _containers.ScalarMap[str, str]
    def __init__(self, diagnosis_id: _Optional[str] = ..., anomaly_description: _Optional[str] = ..., timestamp: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DiagnosisResponse(_message.Message):
    __slots__ = ("diagnosis_id", "success", "hypotheses", "causal_chain", "confidence", "explanation", "supporting_evidence", "timestamp", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIAGNOSIS_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_CHAIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTING_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    diagnosis_id: str
    success: bool
    hypotheses: _containers.RepeatedCompositeFieldContainer[CausalHypothesis]
    causal_chain: str
    confidence: float
    explanation: str
    supporting_evidence: _containers.RepeatedScalarFieldContainer[str]
    timestamp: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, diagnosis_id: _Optional[str] = ..., success: _Optional[bool] = ..., hypotheses: _Optional[_Iterable[_Union[CausalHypothesis, _Mapping]]] = ..., causal_chain: _Optional[str] = ..., confidence: _Optional[float] = ..., explanation: _Optional[str] = ..., supporting_evidence: _Optional[_Iterable[str]] = ..., timestamp: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CausalHypothesis(_message.Message):
    __slots__ = ("hypothesis", "probability", "reasoning", "evidence", "rank")
    HYPOTHESIS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    hypothesis: str
    probability: float
    reasoning: str
    evidence: _containers.RepeatedScalarFieldContainer[str]
    rank: int
    def __init__(self, hypothesis: _Optional[str] = ..., probability: _Optional[float] = ..., reasoning: _Optional[str] = ..., evidence: _Optional[_Iterable[str]] = ..., rank: _Optional[int] = ...) -> None: ...

class ManagementRequest(_message.Message):
    __slots__ = ("request_id", "operation", "parameters", "timestamp")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    operation: str
    parameters: _containers.ScalarMap[str, str]
    timestamp: str
    def __init__(self, request_id: _Optional[str] = ..., operation: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[str] = ...) -> None: ...

class ManagementResponse(_message.Message):
    __slots__ = ("request_id", "success", "result", "metrics", "health_status", "timestamp")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    success: bool
    result: str
    metrics: _containers.ScalarMap[str, str]
    health_status: HealthStatus
    timestamp: str
    def __init__(self, request_id: _Optional[str] = ..., success: _Optional[bool] = ..., result: _Optional[str] = ..., metrics: _Optional[_Mapping[str, str]] = ..., health_status: _Optional[_Union[HealthStatus, _Mapping]] = ..., timestamp: _Optional[str] = ...) -> None: ...

class HealthStatus(_message.Message):
    __slots__ = ("status", "last_check", "performance_metrics", "issues", "model_type", "model_version")
    class PerformanceMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    status: str
    last_check: str
    performance_metrics: _containers.ScalarMap[str, float]
    issues: _containers.RepeatedScalarFieldContainer[str]
    model_type: str
    model_version: str
    def __init__(self, status: _Optional[str] = ..., last_check: _Optional[str] = ..., performance_metrics: _Optional[_Mapping[str, float]] = ..., issues: _Optional[_Iterable[str]] = ..., model_type: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("systems", "kinds", "since_sequence", "from_start")
    SYSTEMS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FROM_START_FIELD_NUMBER: _ClassVar[int]
    systems: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    since_sequence: int
    from_start: bool
    def __init__(self, systems: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[str]] = ..., since_sequence: _Optional[int] = ..., from_start: _Optional[bool] = ...) -> None: ...

class TwinEvent(_message.Message):
    __slots__ = ("sequence", "kind", "system", "timestamp", "emitted_at", "data")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: str
    system: str
    timestamp: str
    emitted_at: str
    data: _struct_pb2.Struct
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[str] = ..., system: _Optional[str] = ..., timestamp: _Optional[str] = ..., emitted_at: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
