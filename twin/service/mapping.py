"""Proto ⇄ domain mapping and request validation.

Validation raises ``InvalidRequest`` (→ INVALID_ARGUMENT with the message); a
missing id is replaced by a fresh UUID so it can be echoed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from twin._proto import digital_twin_pb2 as pb
from twin.core.errors import InvalidRequest
from twin.core.events import iso, new_id, parse_time
from twin.core.limits import DEFAULT_LIMITS, EventLimits
from twin.models.domain import (
    Action,
    CandidatePlan,
    DiagnosisRequest,
    DiagnosisResult,
    Health,
    Impact,
    PlanOutcome,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.plans import scenarios
from twin.models.plans.types import BASELINE_PLAN_ID, MAX_PLANS

QUERY_TYPES = ("current_state", "historical", "natural_language")
SIMULATION_TYPES = ("forecast", "what_if", "scenario", "compare")
PRIORITIES = ("", "low", "normal", "medium", "high", "critical")
MAX_HORIZON_MINUTES = 7 * 24 * 60
MAX_ACTIONS = 100
MAX_TEXT = 16_384


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _time(text: str, field: str, limits: EventLimits = DEFAULT_LIMITS) -> float | None:
    """A request time, checked against the same window as event times (``limits``)."""
    if not text:
        return None
    try:
        t = parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"not an ISO-8601 time or epoch seconds: {text!r}", field) from exc
    return limits.check_request_time(t, field)


def _text(text: str, field: str) -> str:
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"longer than {MAX_TEXT} characters", field)
    return text


def to_query(req: pb.QueryRequest, limits: EventLimits = DEFAULT_LIMITS) -> QueryRequest:
    limits.check_parameters(req.parameters)
    if req.query_type not in QUERY_TYPES:
        raise InvalidRequest(
            f"unknown query_type {req.query_type!r}; expected one of {', '.join(QUERY_TYPES)}",
            "query_type",
        )
    if req.query_type == "natural_language" and not req.query_content.strip():
        raise InvalidRequest("natural_language queries need query_content", "query_content")
    return QueryRequest(
        req.query_id or new_id(),
        req.query_type,
        _text(req.query_content, "query_content"),
        dict(req.parameters),
        _time(req.timestamp, "timestamp", limits),
    )


def to_simulation(
    req: pb.SimulationRequest, limits: EventLimits = DEFAULT_LIMITS
) -> SimulationRequest:
    limits.check_parameters(req.parameters)
    if req.simulation_type not in SIMULATION_TYPES:
        raise InvalidRequest(
            f"unknown simulation_type {req.simulation_type!r}; expected one of "
            f"{', '.join(SIMULATION_TYPES)}",
            "simulation_type",
        )
    if req.horizon_minutes < 0:
        raise InvalidRequest(f"must be >= 0, got {req.horizon_minutes}", "horizon_minutes")
    if req.horizon_minutes > MAX_HORIZON_MINUTES:
        raise InvalidRequest(
            f"must be <= {MAX_HORIZON_MINUTES} (7 days), got {req.horizon_minutes}",
            "horizon_minutes",
        )
    if len(req.actions) > MAX_ACTIONS:
        raise InvalidRequest(f"at most {MAX_ACTIONS} actions", "actions")
    if req.simulation_type == "what_if" and not req.actions:
        raise InvalidRequest("what_if simulations need at least one action", "actions")
    actions = _actions(req.actions, "actions", limits)
    plans: list[CandidatePlan] = []
    if req.plans and req.simulation_type != "compare":
        raise InvalidRequest("plans are only read by simulation_type 'compare'", "plans")
    if req.simulation_type == "compare":
        if not req.plans and not req.actions:
            raise InvalidRequest("a compare simulation needs at least one plan", "plans")
        if len(req.plans) > MAX_PLANS:
            raise InvalidRequest(f"at most {MAX_PLANS} plans", "plans")
        seen: set[str] = set()
        for i, p in enumerate(req.plans):
            pid = p.plan_id.strip() or f"plan-{i + 1}"
            if pid == BASELINE_PLAN_ID:
                raise InvalidRequest(
                    f"{BASELINE_PLAN_ID!r} is reserved for the baseline the twin adds",
                    f"plans[{i}].plan_id",
                )
            if pid in seen:
                raise InvalidRequest(f"duplicate plan_id {pid!r}", f"plans[{i}].plan_id")
            seen.add(pid)
            if len(p.actions) > MAX_ACTIONS:
                raise InvalidRequest(f"at most {MAX_ACTIONS} actions", f"plans[{i}].actions")
            plans.append(CandidatePlan(pid, _actions(p.actions, f"plans[{i}].actions", limits)))
    params = dict(req.parameters)
    # An unknown scenario is INVALID_ARGUMENT whichever model answers.
    scenarios.validate(params, req.horizon_minutes)
    return SimulationRequest(
        req.simulation_id or new_id(),
        req.simulation_type,
        actions,
        req.horizon_minutes,
        params,
        _time(req.timestamp, "timestamp", limits),
        plans,
    )


def _actions(msgs: Any, where: str, limits: EventLimits) -> list[Action]:
    actions = []
    for i, a in enumerate(msgs):
        if not a.action_type.strip():
            raise InvalidRequest("action_type is required", f"{where}[{i}].action_type")
        if a.priority.lower() not in PRIORITIES:
            raise InvalidRequest(f"unknown priority {a.priority!r}", f"{where}[{i}].priority")
        if not math.isfinite(a.timeout) or a.timeout < 0:
            raise InvalidRequest("must be a finite number >= 0", f"{where}[{i}].timeout")
        limits.check_parameters(a.params, f"{where}[{i}].params")
        actions.append(
            Action(
                a.action_type.strip().upper(),
                a.target,
                dict(a.params),
                a.action_id or new_id(),
                a.priority.lower() or "normal",
                a.timeout,
            )
        )
    return actions


def to_diagnosis(
    req: pb.DiagnosisRequest, limits: EventLimits = DEFAULT_LIMITS
) -> DiagnosisRequest:
    limits.check_parameters(req.context, "context")
    return DiagnosisRequest(
        req.diagnosis_id or new_id(),
        _text(req.anomaly_description, "anomaly_description"),
        _time(req.timestamp, "timestamp", limits),
        dict(req.context),
    )


def _json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def _finite(x: float, default: float = 0.0) -> float:
    return float(x) if x is not None and math.isfinite(x) else default


def from_query(query_id: str, res: QueryResult) -> pb.QueryResponse:
    return pb.QueryResponse(
        query_id=query_id,
        success=res.success,
        result=_json(res.result),
        confidence=_finite(res.confidence),
        explanation=res.explanation,
        timestamp=now_iso(),
        metadata={k: str(v) for k, v in res.metadata.items()},
    )


def _states(states: list[PredictedState]) -> list[pb.PredictedState]:
    return [
        pb.PredictedState(
            timestamp=iso(s.t),
            metrics={
                k: float(v) for k, v in s.metrics.items() if v is not None and math.isfinite(v)
            },
            confidence=_finite(s.confidence),
            description=s.description,
        )
        for s in states
    ]


def _impact(i: Impact) -> pb.CostPerformanceReliability:
    return pb.CostPerformanceReliability(
        cost_impact=_finite(i.cost_impact),
        performance_impact=_finite(i.performance_impact),
        reliability_impact=_finite(i.reliability_impact),
        cost_currency=i.cost_currency,
        impact_description=i.impact_description,
    )


def _outcome(o: PlanOutcome) -> pb.PlanOutcome:
    out = pb.PlanOutcome(
        plan_id=o.plan_id,
        rank=o.rank,
        utility=_finite(o.utility),
        slo_breach_probability=_finite(o.slo_breach_probability),
        future_states=_states(o.future_states),
        confidence=_finite(o.confidence),
        explanation=o.explanation,
    )
    if o.impact is not None:
        out.impact_estimates.CopyFrom(_impact(o.impact))
    return out


def from_simulation(sim_id: str, res: SimulationResult, elapsed: float) -> pb.SimulationResponse:
    states = _states(res.future_states)
    avg = (
        sum(s.confidence for s in res.future_states) / len(res.future_states)
        if res.future_states
        else 0.0
    )
    out = pb.SimulationResponse(
        simulation_id=sim_id,
        success=res.success,
        future_states=states,
        metrics=pb.SimulationMetrics(
            execution_time_sec=elapsed,
            scenarios_processed=res.scenarios_processed,
            average_confidence=_finite(avg),
            custom_metrics={k: float(v) for k, v in res.custom_metrics.items() if math.isfinite(v)},
        ),
        confidence=_finite(res.confidence),
        uncertainty_lower=_finite(res.uncertainty_lower),
        uncertainty_upper=_finite(res.uncertainty_upper),
        explanation=res.explanation,
        timestamp=now_iso(),
        metadata={k: str(v) for k, v in res.metadata.items()},
    )
    if res.impact is not None:
        out.impact_estimates.CopyFrom(_impact(res.impact))
    if res.plan_outcomes:
        ranked = sorted(res.plan_outcomes, key=lambda o: o.rank or 1_000_000)
        out.plan_outcomes.extend(_outcome(o) for o in ranked)
    return out


def from_diagnosis(diag_id: str, res: DiagnosisResult) -> pb.DiagnosisResponse:
    return pb.DiagnosisResponse(
        diagnosis_id=diag_id,
        success=res.success,
        hypotheses=[
            pb.CausalHypothesis(
                hypothesis=h.hypothesis,
                probability=_finite(h.probability),
                reasoning=h.reasoning,
                evidence=list(h.evidence),
                rank=h.rank or i + 1,
            )
            for i, h in enumerate(res.hypotheses)
        ],
        causal_chain=res.causal_chain,
        confidence=_finite(res.confidence),
        explanation=res.explanation,
        supporting_evidence=list(res.supporting_evidence),
        timestamp=now_iso(),
        metadata={k: str(v) for k, v in res.metadata.items()},
    )


def from_health(h: Health) -> pb.HealthStatus:
    return pb.HealthStatus(
        status=h.status,
        last_check=now_iso(),
        performance_metrics={
            k: float(v) for k, v in h.performance_metrics.items() if math.isfinite(v)
        },
        issues=list(h.issues),
        model_type=h.model_type,
        model_version=h.model_version,
    )


def parse_replay_params(params: dict[str, str]) -> tuple[int | None, float | None]:
    """``from_sequence`` (integer >= 1) or ``from_time`` (ISO-8601 or epoch seconds), exactly one.

    Raises ``InvalidRequest`` naming the parameter, like every other request check.
    """
    seq_raw = (params.get("from_sequence") or "").strip()
    time_raw = (params.get("from_time") or "").strip()
    if bool(seq_raw) == bool(time_raw):
        raise InvalidRequest(
            "replay needs exactly one of parameters.from_sequence or parameters.from_time",
            "parameters",
        )
    if seq_raw:
        try:
            seq = int(seq_raw)
        except ValueError as exc:
            raise InvalidRequest(
                f"not an integer: {seq_raw[:64]!r}", "parameters.from_sequence"
            ) from exc
        if seq < 1:
            raise InvalidRequest("must be >= 1", "parameters.from_sequence")
        return seq, None
    try:
        t = parse_time(time_raw)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(
            f"not an ISO-8601 time or epoch seconds: {time_raw[:64]!r}", "parameters.from_time"
        ) from exc
    if not math.isfinite(t):
        raise InvalidRequest("not finite", "parameters.from_time")
    return None, t


REPORT_LIMIT_DEFAULT = 50
REPORT_LIMIT_MAX = 500
REPORT_PARAMS = ("system", "kind", "limit")


def parse_report_params(params: dict[str, str]) -> tuple[str | None, str | None, int]:
    """``prediction_report`` parameters: optional ``system`` and ``kind``, ``limit`` 1..500."""
    from twin.core.ledger import REPORT_KINDS

    unknown = sorted(set(params) - set(REPORT_PARAMS))
    if unknown:
        raise InvalidRequest(
            f"unknown parameter {unknown[0][:64]!r}; expected {', '.join(REPORT_PARAMS)}",
            "parameters",
        )
    system = (params.get("system") or "").strip() or None
    if system is not None and len(system) > 256:
        raise InvalidRequest("longer than 256 characters", "parameters.system")
    kind = (params.get("kind") or "").strip() or None
    if kind is not None and kind not in REPORT_KINDS:
        raise InvalidRequest(
            f"unknown kind {kind[:64]!r}; expected one of {', '.join(REPORT_KINDS)}",
            "parameters.kind",
        )
    raw = (params.get("limit") or "").strip()
    limit = REPORT_LIMIT_DEFAULT
    if raw:
        try:
            limit = int(raw)
        except ValueError as exc:
            raise InvalidRequest(f"not an integer: {raw[:64]!r}", "parameters.limit") from exc
        if not 1 <= limit <= REPORT_LIMIT_MAX:
            raise InvalidRequest(f"must be between 1 and {REPORT_LIMIT_MAX}", "parameters.limit")
    return system, kind, limit
