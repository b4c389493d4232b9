"""The real ``polaris-twin-operator`` command, two replicas, kopf peering as the chart runs it.

Two operator processes (``python -m polaris_operator --peering ...``, the chart's
arguments) against the Kubernetes emulator: both announce themselves in the
ClusterKopfPeering object with distinct priorities, the younger one stays paused, the older one
serves DigitalTwins; both answer their liveness endpoints. When the leader stops, it removes
itself from the peering and the stand-by resumes and serves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from crd_tools import admitted, load_examples
from kube_emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]
PEERING = "/apis/kopf.dev/v1/clusterkopfpeerings"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, probe, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    with EmulatorThread() as em:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "e",
                    "clusters": [{"name": "e", "cluster": {"server": em.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                }
            )
        )
        client = httpx.Client(base_url=em.url, timeout=10)
        client.post(
            PEERING,
            json={
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "polaris-twin-operator"},
            },
        ).raise_for_status()
        yield client, kubeconfig
        client.close()


# `polaris-twin-operator` itself (main()), importable whether or not the project is
# installed; the tree is never put on sys.path (its operator/ would shadow the stdlib).
_BOOTSTRAP = """
import importlib.util, sys
root, argv = sys.argv[1], sys.argv[2:]
try:
    import polaris_operator
except ImportError:
    spec = importlib.util.spec_from_file_location(
        "polaris_operator", root + "/operator/polaris_operator/__init__.py",
        submodule_search_locations=[root + "/operator/polaris_operator"])
    module = importlib.util.module_from_spec(spec)
    sys.modules["polaris_operator"] = module
    spec.loader.exec_module(module)
from polaris_operator.main import main
main(argv)
"""


def _start(
    kubeconfig: Path, tmp_path: Path, name: str, health: int
) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    # POD_ID: kopf's peer identity; the chart sets it to the pod name (two local processes
    # would otherwise share user@host).
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "POLARIS_TWIN_IMAGE": "img:1",
        "POD_ID": name,
    }
    args = [
        "--peering=polaris-twin-operator",
        "--peering-lifetime=10",
        f"--liveness=http://127.0.0.1:{health}/healthz",
        "--log-format=plain",
        "--verbose",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(ROOT), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    return proc, log


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_two_replicas_elect_one_leader_and_hand_over(emulator, tmp_path):
    api, kubeconfig = emulator
    ports = _free_port(), _free_port()
    leader, leader_log = _start(kubeconfig, tmp_path, "leader", ports[0])
    standby = None
    try:
        _wait("leader liveness", lambda: _healthy(ports[0]))
        time.sleep(1.5)  # distinct start seconds -> the older replica has the higher priority
        standby, standby_log = _start(kubeconfig, tmp_path, "standby", ports[1])
        _wait("stand-by liveness", lambda: _healthy(ports[1]))

        peers = _wait(
            "two peers",
            lambda: (
                len(p := api.get(f"{PEERING}/polaris-twin-operator").json().get("status") or {})
                == 2
                and p
            ),
        )
        priorities = sorted(peer["priority"] for peer in peers.values())
        assert priorities[0] != priorities[1]
        # kopf starts every replica paused until the peering says it may run; the stand-by
        # sees the leader's higher priority and stays paused (it never logs "Resuming").
        time.sleep(3)
        assert "Resuming operations" not in standby_log.read_text()

        dt = admitted(load_examples()["digitaltwin-mock.yaml"])
        dt["metadata"]["namespace"] = "ha"
        api.post("/apis/polaris.io/v1alpha1/namespaces/ha/digitaltwins", json=dt).raise_for_status()
        _wait(
            "the leader serves",
            lambda: api.get("/apis/apps/v1/namespaces/ha/deployments/twin-mock").status_code == 200,
        )
        assert "twin_changed" in leader_log.read_text()
        assert "twin_changed" not in standby_log.read_text()

        _stop(leader)  # a graceful stop removes the leader from the peering
        _wait(
            "stand-by resumes", lambda: "Resuming operations" in standby_log.read_text(), timeout=40
        )
        api.delete("/apis/apps/v1/namespaces/ha/deployments/twin-mock").raise_for_status()
        _wait(
            "the new leader repairs drift",
            lambda: api.get("/apis/apps/v1/namespaces/ha/deployments/twin-mock").status_code == 200,
        )
    finally:
        _stop(leader)
        if standby is not None:
            _stop(standby)
