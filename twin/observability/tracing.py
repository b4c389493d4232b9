"""OpenTelemetry tracing set-up: provider, sampler and exporter, chosen once by the CLI.

Library code never imports this module: it asks ``opentelemetry.trace.get_tracer``
(a no-op until a provider is installed, and only when ``propagation.tracing_active()``
says one is), and the gRPC server gets its interceptor explicitly from the app's
composition root (``server_interceptor``). Nothing here runs, and the SDK is never
imported, while tracing is off.

Choosing the exporter, as every OpenTelemetry SDK does (the variables win over the
config file):

- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off;
- ``OTEL_TRACES_EXPORTER`` = ``otlp`` (default) and/or ``console`` (comma list);
- OTLP needs an endpoint: ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` or
  ``digital_twin.telemetry.otlp_endpoint`` (without one, ``otlp`` means off);
- ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` = ``grpc`` (default) or ``http/protobuf``;
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` / ``_ARG``
  as usual; otherwise the sampler is ``ParentBased(TraceIdRatioBased(sampling_ratio))``,
  so a sampled producer keeps its trace whole through the twin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "PROTOCOLS",
    "configure_tracing",
    "otlp_endpoint",
    "otlp_protocol",
    "server_interceptor",
    "traces_exporters",
]

_TRUE = ("1", "true", "yes", "on")
PROTOCOLS = ("grpc", "http/protobuf")
_EXPORTERS = ("otlp", "console")


def otlp_endpoint(cfg: Any, environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint spans go to, or None (OTLP export off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    endpoint = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or cfg.telemetry.otlp_endpoint
    )
    return endpoint or None


def otlp_protocol(environ: Mapping[str, str]) -> str:
    """``grpc`` or ``http/protobuf`` (ValueError for anything else)."""
    raw = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip().lower()
    if raw not in PROTOCOLS:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {raw!r} is not one of {', '.join(PROTOCOLS)}"
        )
    return raw


def traces_exporters(cfg: Any, environ: Mapping[str, str]) -> list[str]:
    """The exporters tracing should use (empty = tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    names = [
        n.strip().lower()
        for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if n.strip()
    ]
    if "none" in names:
        return []
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not supported (use otlp, console or none)"
        )
    if "otlp" in names and otlp_endpoint(cfg, environ) is None:
        names.remove("otlp")  # no endpoint known: nothing to send to
    return names


def configure_tracing(
    cfg: Any, environ: Mapping[str, str] | None = None, span_exporter: Any = None
) -> Any:
    """Installs the global tracer provider; returns it (None when tracing is off).

    ``span_exporter`` replaces the configured exporters (tests pass an
    ``InMemorySpanExporter``; spans are then exported synchronously).
    """
    environ = os.environ if environ is None else environ
    names = [] if span_exporter is not None else traces_exporters(cfg, environ)
    if span_exporter is None and not names:
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    attrs: dict[str, Any] = {}
    if not environ.get("OTEL_SERVICE_NAME"):
        attrs[SERVICE_NAME] = cfg.telemetry.service_name
    resource = Resource.create(attrs)
    if environ.get("OTEL_TRACES_SAMPLER"):
        provider = TracerProvider(resource=resource)
    else:
        sampler = ParentBased(TraceIdRatioBased(cfg.telemetry.sampling_ratio))
        provider = TracerProvider(resource=resource, sampler=sampler)
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(cfg, environ)))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter(cfg: Any, environ: Mapping[str, str]) -> Any:
    protocol = otlp_protocol(environ)
    from_env = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    endpoint = otlp_endpoint(cfg, environ)
    assert endpoint is not None
    # A bare host:port from the config means plaintext (an in-cluster collector);
    # write https://... for TLS.
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        if from_env:
            return GrpcExporter()  # every OTEL_EXPORTER_OTLP_* setting applies
        return GrpcExporter(endpoint=url, insecure=url.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    if from_env:
        return HttpExporter()
    if not url.rstrip("/").endswith("/v1/traces"):
        url = url.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=url)


def server_interceptor(provider: Any = None) -> Any:
    """A grpc.aio server interceptor making one SERVER span per RPC."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=provider)
