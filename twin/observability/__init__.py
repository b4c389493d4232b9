"""Traces and metrics plumbing. Library code only calls ``trace.get_tracer(__name__)``
(while ``propagation.tracing_active()``) and registers metrics in the registry it is
given (``twin.core.metrics``); ``setup.instrument_app`` (called by the CLI) installs
the tracer provider and the gRPC server interceptor.

- ``propagation``: W3C trace context in NATS headers (inject on publish, extract on
  receive); no-ops without OpenTelemetry or without a configured provider.
- ``tracing``: provider, sampler and exporter (OTLP gRPC / HTTP, console) from the
  config and ``OTEL_*`` variables; the gRPC server interceptor.
- ``prometheus``: ``MetricsServer``, ``/metrics`` of the runtime's registry.
- ``setup``: ``instrument_app(app, cfg) -> shutdown``.

Importing this package imports nothing heavy; the SDK and the exporters load only
when tracing is switched on.
"""
