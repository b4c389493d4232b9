"""Wires tracing and the Prometheus endpoint into a ``TwinApp``; returns a shutdown hook.

Called by the CLI before ``app.run()``. Everything is opt-in and costs nothing when
off: without an OTLP endpoint the OpenTelemetry SDK is not even imported (library
code keeps the API's no-op tracer), and with ``metrics_port`` 0 no HTTP server and
no prometheus_client import happen.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


def otlp_endpoint(cfg: Any, environ: Mapping[str, str]) -> str | None:
    """The OTLP gRPC endpoint tracing should export to, or None (tracing off)."""
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


def instrument_app(
    app: Any,
    cfg: Any,
    *,
    environ: Mapping[str, str] | None = None,
    span_exporter: Any = None,
    registry: Any = None,
) -> Callable[[], None]:
    """Installs tracing (server interceptor, traced model calls) and ``/metrics``.

    Must run before ``app.start()`` (the interceptor is read when the gRPC server is
    built). ``span_exporter`` and ``registry`` are for tests. The returned callable
    flushes spans and stops the HTTP server; it is idempotent.
    """
    environ = os.environ if environ is None else environ
    closers: list[Callable[[], None]] = []

    if span_exporter is not None or otlp_endpoint(cfg, environ) is not None:
        from twin.observability.tracing import TracedRuntime, configure_tracing, server_interceptor

        provider = configure_tracing(cfg, environ, span_exporter)
        app.interceptors.append(server_interceptor(provider))
        app.servicer.rt = TracedRuntime(app.runtime)
        closers.append(provider.shutdown)
        log.info(
            "tracing on: %s (sampling ratio %s)",
            "in-memory exporter" if span_exporter is not None else otlp_endpoint(cfg, environ),
            cfg.telemetry.sampling_ratio,
        )

    port = cfg.telemetry.metrics_port
    if port:
        from prometheus_client import CollectorRegistry

        from twin.observability.prometheus import MetricsServer, TwinCollector

        reg = registry if registry is not None else CollectorRegistry(auto_describe=False)
        collector = TwinCollector(app.runtime, lambda: app.ingestor.queue.qsize())
        reg.register(collector)
        host = cfg.grpc.host if cfg.grpc.host not in ("", "[::]") else "0.0.0.0"
        server = MetricsServer(reg, port, host)

        def start(_: Any = None) -> None:
            if collector.loop is None:
                collector.loop = asyncio.get_running_loop()
                server.start()
                log.info("Prometheus metrics on http://%s:%d/metrics", host, server.port)

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on a loop yet: start with the app
            app.on_started.insert(0, start)
        else:
            start()  # now, so a slow model start-up is already observable

        def stop_metrics() -> None:
            server.stop()
            if registry is not None:
                registry.unregister(collector)

        closers.append(stop_metrics)
        app.metrics_server = server

    done = False

    def shutdown() -> None:
        nonlocal done
        if done:
            return
        done = True
        for close in reversed(closers):
            try:
                close()
            except Exception:
                log.exception("observability shutdown step failed")

    return shutdown
