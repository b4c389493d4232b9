"""Composition root: config → state → model → gRPC → ingestion, started in that
order and stopped in reverse with a drain:

    health NOT_SERVING → stop accepting RPCs (grace) → drain NATS (pending messages
    applied) → model shutdown → embedded nats-server stopped

Health turns SERVING only once the model is initialised *and* ingestion is
connected, and back to NOT_SERVING whenever NATS disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from twin.core.config import TwinConfig
from twin.durability.manager import Durability
from twin.ingest.embedded import DEFAULT_PORT, EmbeddedNatsServer, port_is_free
from twin.ingest.event_publisher import EventPublisher
from twin.ingest.jetstream import JetStreamIngestor
from twin.ingest.nats_ingest import Ingestor
from twin.observability.prometheus import MetricsServer
from twin.runtime import TwinRuntime
from twin.service.health_events import HealthEvents
from twin.service.server import TwinServer
from twin.service.servicer import DigitalTwinServicer
from twin.supervisor import ModelSupervisor

log = logging.getLogger(__name__)


class TwinApp:
    def __init__(self, config: TwinConfig, model_name: str | None = None) -> None:
        self.config = config
        self.runtime = TwinRuntime(config, model_name)
        self.embedded: EmbeddedNatsServer | None = None
        ingestor_cls = JetStreamIngestor if config.nats.jetstream.get("enabled") else Ingestor
        self.ingestor = ingestor_cls(
            config.nats,
            self.runtime.state,
            lambda: self.runtime.model,
            self.runtime.ingest_stats,
            twin_id=socket.gethostname(),
            on_status=self._on_ingest_status,
            registry=self.runtime.registry,
            systems=config.systems,
        )
        # Snapshots + JetStream position + replay; restored before ingestion starts.
        self.durability: Durability | None = None
        if config.state.snapshot_dir or isinstance(self.ingestor, JetStreamIngestor):
            self.durability = Durability(config, self.runtime, self.ingestor)
            self.runtime.durability = self.durability
            if isinstance(self.ingestor, JetStreamIngestor):
                # Readiness waits for the replay at start (nats.jetstream.ready_after_replay).
                self.ingestor.on_caught_up = lambda: self._on_ingest_status(self.ingestor.connected)
                # ... and turns NOT_SERVING while the replica lags (nats.jetstream.max_lag_sec).
                self.ingestor.on_lag_change = lambda: self._on_ingest_status(
                    self.ingestor.connected
                )
        wm = config.world_model
        self.supervisor = ModelSupervisor(
            lambda: self.runtime.model.health(),
            self.runtime.reload,
            wm.health_check_interval_sec,
            wm.reload_on_failure,
        )
        self.runtime.supervisor = self.supervisor
        self.servicer = DigitalTwinServicer(self.runtime)
        self.server: TwinServer | None = None
        # HTTP gateway + console (twin.gateway, imported only when http.port != 0),
        # pushed events on NATS, health_changed events.
        self.gateway: Any = None
        self.event_publisher: EventPublisher | None = None
        self.health_events = HealthEvents(self.runtime, config.events.health_poll_sec)
        # ``/metrics`` of the runtime's registry when telemetry.metrics_port is set.
        self.metrics_server: MetricsServer | None = None
        self.nats_url: str | None = None
        self._stop = asyncio.Event()
        self._stopped = False
        self._model_ready = False
        self._pending_health: set[asyncio.Task[None]] = set()
        self.interceptors: list[object] = []
        self.on_started: list[Callable[[TwinApp], None]] = []
        self.on_stopping: list[Callable[[], Awaitable[None]]] = []
        self.exit_code = 0

    @property
    def grpc_port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def http_port(self) -> int:
        """The bound HTTP port (0 when http.port is 0)."""
        return self.gateway.port if self.gateway is not None else 0

    def readiness(self) -> tuple[bool, str]:
        """Ready to serve (gRPC health "" SERVING, HTTP /readyz 200), or why not."""
        if self._stopped:
            return False, "shutting down"
        if not self._model_ready:
            return False, "world model initialising"
        if not self.runtime.ingest_connected:
            return False, "ingestion is not connected to NATS"
        if self.durability is not None and not self.durability.ready():
            return False, "replaying the stream"
        return True, ""

    def _on_ingest_status(self, connected: bool) -> None:
        self.runtime.ingest_connected = connected
        self.health_events.poke()
        if self.server is not None:
            ready = self.readiness()[0]
            task = asyncio.get_running_loop().create_task(self.server.set_ready(ready))
            self._pending_health.add(task)
            task.add_done_callback(self._pending_health.discard)

    async def start(self) -> None:
        cfg = self.config
        if cfg.telemetry.metrics_port:
            # First, so a slow model start-up is already observable.
            host = cfg.grpc.host if cfg.grpc.host not in ("", "[::]") else "0.0.0.0"
            self.metrics_server = MetricsServer(
                self.runtime.registry, cfg.telemetry.metrics_port, host
            )
            self.metrics_server.start(asyncio.get_running_loop())
            log.info("Prometheus metrics on http://%s:%d/metrics", host, self.metrics_server.port)
        self.server = TwinServer(cfg.grpc, self.servicer, self.interceptors)
        await self.server.start()
        log.info(
            "gRPC listening on %s:%d (health NOT_SERVING until ready)",
            cfg.grpc.host,
            self.server.port,
        )
        self.runtime.state.events.bind()
        if cfg.http.port:
            from twin.gateway.server import HttpGateway

            self.gateway = HttpGateway(cfg.http, cfg.grpc, self.servicer, self.readiness)
            await self.gateway.start()
            self.gateway.register(self.runtime.registry)
        await self.runtime.initialize()
        self._model_ready = True
        url = cfg.nats.url
        if not url:
            # The standard port when free, so `polaris-twin load` finds it without flags.
            self.embedded = EmbeddedNatsServer(
                port=DEFAULT_PORT if port_is_free(DEFAULT_PORT) else -1, jetstream=True
            )
            url = await self.embedded.start()
        self.nats_url = url
        if self.durability is not None:
            await self.durability.restore()
        await self.ingestor.start(url)
        if cfg.events.nats_publish and self.ingestor.nc is not None:
            self.event_publisher = EventPublisher(
                self.runtime.state.events, cfg.events.nats_subject_prefix, socket.gethostname()
            )
            self.event_publisher.start(self.ingestor.nc)
            self.event_publisher.register(self.runtime.registry)
        self.health_events.start()
        if self.durability is not None:
            self.durability.start()
        self.supervisor.start()
        await self.server.set_ready(
            self.ingestor.connected and (self.durability is None or self.durability.ready())
        )
        http = f" http=:{self.http_port}" if self.gateway is not None else ""
        log.info(
            "digital twin ready: model=%s grpc=:%d%s",
            self.runtime.model_name,
            self.server.port,
            http,
        )
        for cb in self.on_started:
            cb(self)

    def request_stop(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code or self.exit_code
        self._stop.set()

    async def wait(self) -> None:
        """Until a stop is requested or NATS gives up for good."""
        closed = asyncio.create_task(self.ingestor.closed_unexpectedly.wait())
        stop = asyncio.create_task(self._stop.wait())
        done, pending = await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if closed in done:
            self.exit_code = 1

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down: health NOT_SERVING, draining")
        for hook in self.on_stopping:
            with contextlib.suppress(Exception):
                await hook()
        await self.health_events.stop()
        # Watchers (gRPC, SSE) end now with "shutting down", so they do not hold the grace period.
        self.runtime.state.events.close("the twin is shutting down")
        if self.gateway is not None:
            await self.gateway.stop()
        if self.server is not None:
            await self.server.stop()
        await self.supervisor.stop()
        if self.event_publisher is not None:
            await self.event_publisher.stop()
        await self.ingestor.stop()
        if self.durability is not None:
            try:
                await self.durability.stop()
            except Exception:  # a failed last snapshot must not block shutdown
                log.exception("final snapshot failed")
        with contextlib.suppress(Exception):
            await self.runtime.shutdown()
        if self.embedded is not None:
            await self.embedded.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("stopped (events applied: %d)", self.runtime.ingest_stats.events_applied)

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, drain and stop; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self.wait()
        finally:
            await self.stop()
        return self.exit_code
