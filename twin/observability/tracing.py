"""OpenTelemetry tracing: provider set-up and spans around world-model calls.

Design:

- Tracing is on when an OTLP endpoint is known (``digital_twin.telemetry.otlp_endpoint``
  or the standard ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``) and not switched off
  (``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``). Off means the SDK
  is never imported and library code keeps talking to the API's no-op tracer.
- Standard ``OTEL_*`` variables win over the config file, as in every OpenTelemetry
  SDK: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` /
  ``_ARG``, ``OTEL_EXPORTER_OTLP_*``. Otherwise the sampler is
  ``ParentBased(TraceIdRatioBased(sampling_ratio))``: a sampled producer keeps its
  trace whole through the twin.
- World-model calls are traced by a thin view of the runtime handed to the servicer
  (``TracedRuntime``), so neither the servicer nor the models know about tracing.
  The view reads ``runtime.model`` on every call, so a model swapped by
  ``reload_model`` is traced too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

from twin.observability.setup import otlp_endpoint

__all__ = [
    "TracedModel",
    "TracedRuntime",
    "configure_tracing",
    "otlp_endpoint",
    "server_interceptor",
]


def configure_tracing(
    cfg: Any, environ: Mapping[str, str] | None = None, span_exporter: Any = None
) -> Any:
    """Installs the global tracer provider; returns it (None when tracing is off).

    ``span_exporter`` replaces the OTLP exporter (tests pass an
    ``InMemorySpanExporter``; spans are then exported synchronously).
    """
    environ = os.environ if environ is None else environ
    endpoint = otlp_endpoint(cfg, environ)
    if span_exporter is None and endpoint is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    attrs: dict[str, Any] = {}
    if not environ.get("OTEL_SERVICE_NAME"):
        attrs[SERVICE_NAME] = cfg.telemetry.service_name
    resource = Resource.create(attrs)
    sampler = (
        None
        if environ.get("OTEL_TRACES_SAMPLER")
        else ParentBased(TraceIdRatioBased(cfg.telemetry.sampling_ratio))
    )
    provider = (
        TracerProvider(resource=resource, sampler=sampler)
        if sampler
        else TracerProvider(resource=resource)
    )
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        env_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if env_endpoint:
            exporter = OTLPSpanExporter()  # every OTEL_EXPORTER_OTLP_* setting applies
        else:
            assert endpoint is not None
            # A bare host:port from the config means plaintext (an in-cluster
            # collector); write https://... for TLS.
            url = endpoint if "://" in endpoint else f"http://{endpoint}"
            exporter = OTLPSpanExporter(endpoint=url, insecure=url.startswith("http://"))
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def server_interceptor(provider: Any) -> Any:
    """A grpc.aio server interceptor making one SERVER span per RPC."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=provider)


def _metric_count(params: Mapping[str, str]) -> int:
    raw = params.get("metrics") or params.get("metric") or ""
    return sum(1 for m in raw.split(",") if m.strip())


def _system(params: Mapping[str, str]) -> str:
    return params.get("system") or params.get("source") or ""


class TracedModel:
    """Wraps one world model's RPC-facing calls in spans; everything else passes through."""

    __slots__ = ("_model", "_name")

    def __init__(self, model: Any, name: str) -> None:
        self._model = model
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._model, attr)

    async def _call(
        self, op: str, request: Any, attrs: dict[str, Any], call: Callable[[], Any]
    ) -> Any:
        attrs["polaris.model"] = self._name
        attrs["polaris.operation"] = op
        # Looked up per call (cheap next to a model call) so a re-installed provider
        # is honoured; a module-level ProxyTracer would pin the first one.
        with trace.get_tracer(__name__).start_as_current_span(
            f"world_model.{op}", attributes=attrs, record_exception=True
        ) as span:
            t0 = time.perf_counter()
            result = await call()
            if span.is_recording():
                span.set_attribute("polaris.success", bool(getattr(result, "success", False)))
                span.set_attribute("polaris.model_seconds", time.perf_counter() - t0)
                explanation = getattr(result, "explanation", "")
                if not getattr(result, "success", True) and explanation:
                    span.set_attribute("polaris.explanation", str(explanation)[:256])
            return result

    async def query(self, request: Any) -> Any:
        params = request.parameters
        attrs = {
            "polaris.query_type": request.query_type,
            "polaris.system": _system(params),
            "polaris.metric_count": _metric_count(params),
        }
        return await self._call("query", request, attrs, lambda: self._model.query(request))

    async def simulate(self, request: Any) -> Any:
        params = request.parameters
        targets = sorted({a.target for a in request.actions if a.target})
        attrs = {
            "polaris.simulation_type": request.simulation_type,
            "polaris.system": _system(params) or ",".join(targets),
            "polaris.metric_count": _metric_count(params),
            "polaris.horizon_minutes": request.horizon_minutes,
            "polaris.action_count": len(request.actions),
        }
        return await self._call("simulate", request, attrs, lambda: self._model.simulate(request))

    async def diagnose(self, request: Any) -> Any:
        ctx = request.context or {}
        attrs = {"polaris.system": _system(ctx), "polaris.metric_count": _metric_count(ctx)}
        return await self._call("diagnose", request, attrs, lambda: self._model.diagnose(request))


class TracedRuntime:
    """The runtime as the servicer sees it, with the current model traced."""

    def __init__(self, runtime: Any) -> None:
        self.__dict__["_rt"] = runtime
        self.__dict__["_cache"] = (None, None)

    @property
    def model(self) -> TracedModel:
        rt = self._rt
        current, wrapped = self._cache
        if current is not rt.model:
            wrapped = TracedModel(rt.model, rt.model_name)
            self.__dict__["_cache"] = (rt.model, wrapped)
        return wrapped

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._rt, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._rt, attr, value)
