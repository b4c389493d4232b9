"""The CLI's one observability call: tracing for a ``TwinApp``; returns a shutdown hook.

Must run before ``app.start()``: the interceptor goes into ``app.interceptors``, which
the app hands to the gRPC server it builds. Metrics need no set-up here: the app
serves its runtime's registry on ``telemetry.metrics_port`` itself. With tracing off
nothing is imported beyond this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["instrument_app"]


def instrument_app(
    app: Any,
    cfg: Any,
    *,
    environ: Mapping[str, str] | None = None,
    span_exporter: Any = None,
) -> Callable[[], None]:
    """Installs the tracer provider and the gRPC server interceptor when tracing is on.

    ``span_exporter`` is for tests. The returned callable flushes and shuts the
    provider down; it is idempotent.
    """
    environ = os.environ if environ is None else environ
    from twin.observability.tracing import configure_tracing, server_interceptor, traces_exporters

    provider = configure_tracing(cfg, environ, span_exporter)
    if provider is None:
        return lambda: None
    app.interceptors.append(server_interceptor(provider))
    log.info(
        "tracing on: %s (sampling ratio %s)",
        "in-memory exporter"
        if span_exporter is not None
        else ", ".join(traces_exporters(cfg, environ)),
        cfg.telemetry.sampling_ratio,
    )
    done = False

    def shutdown() -> None:
        nonlocal done
        if not done:
            done = True
            try:
                provider.shutdown()
            except Exception:
                log.exception("tracing shutdown failed")

    return shutdown
