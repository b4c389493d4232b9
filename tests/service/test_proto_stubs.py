"""The committed stubs match proto/digital_twin.proto, which matches the original wire contract."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from twin._proto import digital_twin_pb2 as pb
from twin._proto.generate import GENERATED, OUT, render

S, B, D, I, M = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_DOUBLE, F.TYPE_INT32, F.TYPE_MESSAGE  # noqa: E741 - the descriptor type letters

CONTRACT = {
    "QueryRequest": [
        (1, "query_id", S),
        (2, "query_type", S),
        (3, "query_content", S),
        (4, "parameters", M),
        (5, "timestamp", S),
    ],
    "QueryResponse": [
        (1, "query_id", S),
        (2, "success", B),
        (3, "result", S),
        (4, "confidence", D),
        (5, "explanation", S),
        (6, "timestamp", S),
        (7, "metadata", M),
    ],
    "SimulationRequest": [
        (1, "simulation_id", S),
        (2, "simulation_type", S),
        (3, "actions", M),
        (4, "horizon_minutes", I),
        (5, "parameters", M),
        (6, "timestamp", S),
    ],
    "ControlAction": [
        (1, "action_id", S),
        (2, "action_type", S),
        (3, "target", S),
        (4, "params", M),
        (5, "priority", S),
        (6, "timeout", D),
    ],
    "SimulationResponse": [
        (1, "simulation_id", S),
        (2, "success", B),
        (3, "future_states", M),
        (4, "metrics", M),
        (5, "confidence", D),
        (6, "uncertainty_lower", D),
        (7, "uncertainty_upper", D),
        (8, "explanation", S),
        (9, "impact_estimates", M),
        (10, "timestamp", S),
        (11, "metadata", M),
    ],
    "PredictedState": [
        (1, "timestamp", S),
        (2, "metrics", M),
        (3, "confidence", D),
        (4, "description", S),
    ],
    "SimulationMetrics": [
        (1, "execution_time_sec", D),
        (2, "scenarios_processed", I),
        (3, "average_confidence", D),
        (4, "custom_metrics", M),
    ],
    "CostPerformanceReliability": [
        (1, "cost_impact", D),
        (2, "performance_impact", D),
        (3, "reliability_impact", D),
        (4, "cost_currency", S),
        (5, "impact_description", S),
    ],
    "DiagnosisRequest": [
        (1, "diagnosis_id", S),
        (2, "anomaly_description", S),
        (3, "timestamp", S),
        (4, "context", M),
    ],
    "DiagnosisResponse": [
        (1, "diagnosis_id", S),
        (2, "success", B),
        (3, "hypotheses", M),
        (4, "causal_chain", S),
        (5, "confidence", D),
        (6, "explanation", S),
        (7, "supporting_evidence", S),
        (8, "timestamp", S),
        (9, "metadata", M),
    ],
    "CausalHypothesis": [
        (1, "hypothesis", S),
        (2, "probability", D),
        (3, "reasoning", S),
        (4, "evidence", S),
        (5, "rank", I),
    ],
    "ManagementRequest": [
        (1, "request_id", S),
        (2, "operation", S),
        (3, "parameters", M),
        (4, "timestamp", S),
    ],
    "ManagementResponse": [
        (1, "request_id", S),
        (2, "success", B),
        (3, "result", S),
        (4, "metrics", M),
        (5, "health_status", M),
        (6, "timestamp", S),
    ],
    "HealthStatus": [
        (1, "status", S),
        (2, "last_check", S),
        (3, "performance_metrics", M),
        (4, "issues", S),
        (5, "model_type", S),
        (6, "model_version", S),
    ],
}
REPEATED = {
    ("SimulationRequest", "actions"),
    ("SimulationRequest", "plans"),
    ("SimulationResponse", "future_states"),
    ("SimulationResponse", "plan_outcomes"),
    ("CandidatePlan", "actions"),
    ("PlanOutcome", "future_states"),
    ("DiagnosisResponse", "hypotheses"),
    ("DiagnosisResponse", "supporting_evidence"),
    ("CausalHypothesis", "evidence"),
    ("HealthStatus", "issues"),
}


def test_committed_stubs_are_not_stale() -> None:
    fresh = render()
    for name in GENERATED:
        assert (OUT / name).read_text() == fresh[name], (
            f"{name} is stale: run python twin/_proto/generate.py"
        )


def test_package_service_and_rpcs_match_the_original() -> None:
    assert pb.DESCRIPTOR.package == "polaris.digitaltwin"
    svc = pb.DESCRIPTOR.services_by_name["DigitalTwin"]
    rpcs = {
        (m.name, m.input_type.name, m.output_type.name, m.server_streaming) for m in svc.methods
    }
    original = {
        ("Query", "QueryRequest", "QueryResponse", False),
        ("Simulate", "SimulationRequest", "SimulationResponse", False),
        ("Diagnose", "DiagnosisRequest", "DiagnosisResponse", False),
        ("Manage", "ManagementRequest", "ManagementResponse", False),
    }
    added = {("Watch", "WatchRequest", "TwinEvent", True)}  # additive (issue 14)
    assert rpcs == original | added


def test_watch_messages_are_pinned() -> None:
    U, E = F.TYPE_UINT64, F.TYPE_MESSAGE
    pinned = {
        "WatchRequest": [
            (1, "systems", S),
            (2, "kinds", S),
            (3, "since_sequence", U),
            (4, "from_start", B),
        ],
        "TwinEvent": [
            (1, "sequence", U),
            (2, "kind", S),
            (3, "system", S),
            (4, "timestamp", S),
            (5, "emitted_at", S),
            (6, "data", E),
        ],
    }
    for msg, fields in pinned.items():
        desc = pb.DESCRIPTOR.message_types_by_name[msg]
        assert [(f.number, f.name, f.type) for f in desc.fields] == fields, msg
    assert (
        pb.TwinEvent.DESCRIPTOR.fields_by_name["data"].message_type.full_name
        == "google.protobuf.Struct"
    )


# Added for plan comparison (issue 11): new numbers only, the original fields untouched.
ADDED = {
    "SimulationRequest": [(7, "plans", M)],
    "SimulationResponse": [(12, "plan_outcomes", M)],
    "CandidatePlan": [(1, "plan_id", S), (2, "actions", M)],
    "PlanOutcome": [
        (1, "plan_id", S),
        (2, "rank", I),
        (3, "utility", D),
        (4, "slo_breach_probability", D),
        (5, "future_states", M),
        (6, "impact_estimates", M),
        (7, "confidence", D),
        (8, "explanation", S),
    ],
}


def test_plan_comparison_fields_are_additive() -> None:
    for msg, fields in ADDED.items():
        desc = pb.DESCRIPTOR.message_types_by_name[msg]
        for number, name, ftype in fields:
            f = desc.fields_by_number[number]
            assert (f.name, f.type) == (name, ftype), f"{msg}.{name}"
            is_repeated = f.is_repeated and not (
                f.message_type and f.message_type.GetOptions().map_entry
            )
            assert is_repeated == ((msg, name) in REPEATED), f"{msg}.{name} repeated"
        original = {n for n, _, _ in CONTRACT.get(msg, [])}
        assert not original & {n for n, _, _ in fields}
    assert (
        pb.PlanOutcome.DESCRIPTOR.fields_by_name["impact_estimates"].message_type.name
        == "CostPerformanceReliability"
    )


def test_every_field_keeps_its_number_name_and_type() -> None:
    for msg, fields in CONTRACT.items():
        desc = pb.DESCRIPTOR.message_types_by_name[msg]
        for number, name, ftype in fields:
            f = desc.fields_by_number[number]
            assert (f.name, f.type) == (name, ftype), f"{msg}.{name}"
            is_repeated = f.is_repeated and not (
                f.message_type and f.message_type.GetOptions().map_entry
            )
            assert is_repeated == ((msg, name) in REPEATED), f"{msg}.{name} repeated"
