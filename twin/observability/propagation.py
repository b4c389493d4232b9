"""W3C trace context across NATS headers; a no-op when OpenTelemetry is absent or off.

Producers call ``inject_headers()`` on every publish: with no tracer provider
configured the current span is invalid, the propagator writes nothing and the
message goes out without headers, so "tracing off" costs a dict and a call.
Consumers call ``remote_span_context(headers)`` only when headers are present and
a real provider is installed (``tracing_active()``), so a traced producer talking
to an untraced twin costs nothing either.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - otel is an optional extra
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]


_UNKNOWN = object()


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """Current span context as NATS headers (None when there is nothing to carry)."""
    if propagate is None:
        return headers
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier or None


def extract_context(headers: dict[str, str] | None) -> Any:
    """An OpenTelemetry ``Context`` from message headers, or None."""
    if propagate is None or not headers:
        return None
    return propagate.extract(headers)


def tracing_active() -> bool:
    """True once a real (SDK) tracer provider is installed; cheap enough per message.

    Reads the API's global directly: ``get_tracer_provider()`` consults
    ``os.environ`` on every call while no provider is set, which is the common
    (tracing off) case on the ingestion path.
    """
    if trace is None:
        return False
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return False
    if provider is _UNKNOWN:  # pragma: no cover - a future API without the global
        provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def remote_span_context(headers: dict[str, str] | None) -> Any:
    """The producer's ``SpanContext`` carried in ``headers`` (None if absent or invalid)."""
    ctx = extract_context(headers)
    if ctx is None:
        return None
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None
