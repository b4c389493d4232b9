"""Traces and metrics. Library code only calls ``trace.get_tracer(__name__)``;
``setup.instrument_app`` (called by the CLI) configures providers and exporters.

- ``propagation``: W3C trace context in NATS headers (inject on publish, extract on
  receive); no-ops without OpenTelemetry or without a configured provider.
- ``tracing``: provider set-up from the config and ``OTEL_*`` variables, the gRPC
  server interceptor, spans around world-model calls.
- ``prometheus``: ``/metrics`` from ``TwinRuntime.metrics_snapshot()``.
- ``setup``: ``instrument_app(app, cfg) -> shutdown``.

Importing this package imports nothing heavy; the SDK, the exporter and
prometheus_client load only when switched on.
"""
