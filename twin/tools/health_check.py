"""``--health-check``: asks a running twin over gRPC, the way a probe and a person would.

Two questions: the standard ``grpc.health.v1`` check (what Kubernetes probes see)
and ``Manage health_check`` (the model's own status and issues). Exit 0 only when
the first says SERVING and the second says healthy or degraded.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


def check(target: str, timeout: float = 5.0, service: str = "") -> tuple[bool, str]:
    """Returns (ok, human-readable report)."""
    lines = [f"target: {target}"]
    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            serving = resp.status == health_pb2.HealthCheckResponse.SERVING
            lines.append(
                f"grpc.health.v1: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            )
        except grpc.RpcError as exc:
            return False, "\n".join(
                lines + [f"grpc.health.v1: unreachable ({exc.code().name}: {exc.details()})"]
            )
        try:
            m = pb_grpc.DigitalTwinStub(channel).Manage(
                pb.ManagementRequest(operation="health_check"), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, "\n".join(
                lines + [f"Manage health_check: failed ({exc.code().name}: {exc.details()})"]
            )
    h = m.health_status
    lines.append(f"model: {h.model_type} {h.model_version}".rstrip())
    lines.append(f"status: {h.status}")
    lines.extend(f"issue: {i}" for i in h.issues)
    ok = serving and h.status in ("healthy", "degraded")
    return ok, "\n".join(lines)
