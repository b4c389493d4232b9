"""Spans around world-model calls, made by the servicer where it calls the model.

One INTERNAL span ``world_model.<operation>`` per call, child of the RPC's SERVER span
(the interceptor's), with attributes a trace backend can filter on: the model, the
operation, the system, how many metrics or actions, and whether the answer succeeded
(with its explanation when it did not). Asks ``trace.get_tracer(__name__)`` only while
a tracer provider is installed; otherwise ``model_call_span`` is a null context and
OpenTelemetry need not be installed at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from twin.models.domain import DiagnosisRequest, QueryRequest, SimulationRequest
from twin.observability.propagation import tracing_active

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - otel is an optional extra; tracing_active() is False
    trace = None  # type: ignore[assignment]

__all__ = ["model_call_span", "record_outcome", "request_attributes"]


def _metric_count(params: Mapping[str, str]) -> int:
    raw = params.get("metrics") or params.get("metric") or ""
    return sum(1 for m in raw.split(",") if m.strip())


def _system(params: Mapping[str, str]) -> str:
    return params.get("system") or params.get("source") or ""


def request_attributes(request: Any) -> dict[str, Any]:
    """The filterable attributes of one domain request."""
    if isinstance(request, QueryRequest):
        p = request.parameters
        return {
            "polaris.query_type": request.query_type,
            "polaris.system": _system(p),
            "polaris.metric_count": _metric_count(p),
        }
    if isinstance(request, SimulationRequest):
        p = request.parameters
        targets = sorted({a.target for a in request.actions if a.target})
        return {
            "polaris.simulation_type": request.simulation_type,
            "polaris.system": _system(p) or ",".join(targets),
            "polaris.metric_count": _metric_count(p),
            "polaris.horizon_minutes": request.horizon_minutes,
            "polaris.action_count": len(request.actions),
        }
    if isinstance(request, DiagnosisRequest):
        ctx = request.context or {}
        return {"polaris.system": _system(ctx), "polaris.metric_count": _metric_count(ctx)}
    return {}


@contextlib.contextmanager
def model_call_span(operation: str, model: str, request: Any) -> Iterator[Any]:
    """The span of one model call (None while tracing is off)."""
    if trace is None or not tracing_active():
        yield None
        return
    attrs = request_attributes(request)
    attrs["polaris.model"] = model
    attrs["polaris.operation"] = operation
    # Looked up per call (cheap next to a model call) so a re-installed provider is
    # honoured; a module-level tracer would pin the first one.
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(
        f"world_model.{operation}", attributes=attrs, record_exception=True
    ) as span:
        yield span


def record_outcome(span: Any, result: Any, seconds: float) -> None:
    """Success, duration and (on failure) the explanation of a model call's answer."""
    if span is None or not span.is_recording():
        return
    if isinstance(result, str):  # the servicer's in-band failure text (timeout, model error)
        success, explanation = False, result
    else:
        success, explanation = (
            bool(getattr(result, "success", False)),
            str(getattr(result, "explanation", "")),
        )
    span.set_attribute("polaris.success", success)
    span.set_attribute("polaris.model_seconds", seconds)
    if not success and explanation:
        span.set_attribute("polaris.explanation", explanation[:256])
