"""``/metrics`` over HTTP: the twin's registry in the Prometheus text format.

The registry is the one source (``twin.core.metrics``); this module only serves it.
``prometheus_client``'s HTTP server scrapes on its own thread, but the collectors
read the store and the model, which belong to the event-loop thread, so the server
reads the registry through ``LoopBoundRegistry`` (collection runs on the loop).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from twin.core.errors import PortInUse
from twin.core.metrics import LoopBoundRegistry

__all__ = ["MetricsServer"]


class MetricsServer:
    """``/metrics`` of ``registry`` on ``host:port`` (0 = any free port; see ``port``)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self.registry = registry
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=LoopBoundRegistry(self.registry, loop)
            )
        except OSError as exc:
            raise PortInUse(
                "telemetry.metrics_port", f"{self.host}:{self.port}", "--metrics-port"
            ) from exc
        self.port = self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
