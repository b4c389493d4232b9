"""Builds the grpc.aio server: the DigitalTwin service, standard health, reflection,
and every ``grpc:`` setting of the config applied (the original validated them and
then ignored them).

Health services: ``""`` and ``polaris.digitaltwin.DigitalTwin`` are SERVING only
while the model is initialised and ingestion is connected (readiness);
``liveness`` is SERVING for as long as the process runs and can answer, so a NATS
outage makes a pod unready, not restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.core.config import GrpcConfig
from twin.core.errors import PortInUse
from twin.service.admission import InFlightLimit
from twin.service.servicer import DigitalTwinServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DigitalTwin"].full_name
READINESS_SERVICES = ("", SERVICE_NAME)
LIVENESS_SERVICE = "liveness"


def server_options(cfg: GrpcConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_size),
        ("grpc.max_send_message_length", cfg.max_message_size),
        ("grpc.keepalive_time_ms", cfg.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", cfg.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min(cfg.keepalive_time_ms, 10_000)),
        ("grpc.so_reuseport", 0),
    ]


def server_credentials(cfg: GrpcConfig) -> grpc.ServerCredentials | None:
    """TLS (and mTLS when a client CA is given) from files; None = plaintext."""
    if not cfg.tls_cert_file:
        return None
    key = Path(cfg.tls_key_file or "").read_bytes()
    cert = Path(cfg.tls_cert_file).read_bytes()
    ca = Path(cfg.tls_client_ca_file).read_bytes() if cfg.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


class TwinServer:
    """The gRPC server plus its health servicer; ``port`` is the bound port."""

    def __init__(
        self,
        cfg: GrpcConfig,
        servicer: DigitalTwinServicer,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.cfg = cfg
        # No maximum_concurrent_rpcs: gRPC core would refuse health checks too. The
        # in-flight limit exempts health and reflection (twin/service/admission.py).
        limit = cfg.max_workers + 2 * servicer.perf.max_concurrent_queries
        self.in_flight = InFlightLimit(limit, servicer.rpc_metrics.reject)
        self.server = grpc.aio.server(
            options=server_options(cfg),
            interceptors=[self.in_flight, *interceptors],
        )
        pb_grpc.add_DigitalTwinServicer_to_server(servicer, self.server)  # type: ignore[no-untyped-call]  # generated, untyped
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        address = f"{cfg.host}:{cfg.port}"
        creds = server_credentials(cfg)
        try:
            self.port = (
                self.server.add_secure_port(address, creds)
                if creds
                else self.server.add_insecure_port(address)
            )
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise PortInUse("grpc.port", address, "--grpc-port") from exc
        if self.port == 0:
            raise PortInUse("grpc.port", address, "--grpc-port")

    async def start(self) -> None:
        for name in READINESS_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()

    async def set_ready(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in READINESS_SERVICES:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING everywhere, then let in-flight RPCs finish within ``grace``."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.cfg.grace_period_sec if grace is None else grace)
