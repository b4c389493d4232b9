"""End to end on a real cluster (kind, k3d, minikube or any other): chart, operator, twin.

Skipped unless POLARIS_E2E_KUBECONFIG points at a kubeconfig. Everything it creates lives in
one fresh namespace (plus the cluster-scoped CRDs and the chart's ClusterRole/Binding and
ClusterKopfPeering), and is removed at the end.

    docker build -t polaris-twin:e2e .
    kind create cluster --name polaris
    kind load docker-image polaris-twin:e2e --name polaris
    kind get kubeconfig --name polaris > /tmp/polaris-kind.yaml
    POLARIS_E2E_KUBECONFIG=/tmp/polaris-kind.yaml pytest -m cluster tests/cluster -v

Env: POLARIS_E2E_IMAGE (default polaris-twin:e2e, already loaded into the cluster),
POLARIS_E2E_NATS_IMAGE (default nats:2.10-alpine, pulled by the cluster), HELM (else
.tools/bin/helm, else PATH), KUBECTL (else PATH).

What it proves that the offline suites cannot: the API server accepts the CRD (structural
schema, CEL cost limits) and refuses bad twins with the rule's message; the chart's RBAC is
enough; the image starts as UID 10001 on a read-only root filesystem; the kubelet's gRPC
probes see SERVING; the Service routes; ``kubectl scale`` works through the scale
subresource; garbage collection removes the children; ``helm test`` passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("POLARIS_E2E_KUBECONFIG")
IMAGE = os.environ.get("POLARIS_E2E_IMAGE", "polaris-twin:e2e")
NATS_IMAGE = os.environ.get("POLARIS_E2E_NATS_IMAGE", "nats:2.10-alpine")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not KUBECONFIG, reason="set POLARIS_E2E_KUBECONFIG to run against a real cluster"
    ),
]


def _tool(env: str, name: str, *extra: Path) -> str:
    for candidate in (os.environ.get(env), *map(str, extra), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"{name} not found (set {env})")


def run(
    *cmd: str, input: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": KUBECONFIG or ""}
    proc = subprocess.run(
        cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    return {
        "kubectl": _tool("KUBECTL", "kubectl"),
        "helm": _tool("HELM", "helm", ROOT / ".tools" / "bin" / "helm"),
    }


@pytest.fixture(scope="module")
def namespace(tools: dict[str, str]) -> Iterator[str]:
    kubectl, helm = tools["kubectl"], tools["helm"]
    ns = f"polaris-e2e-{uuid.uuid4().hex[:6]}"
    run(kubectl, "create", "namespace", ns)
    try:
        _install_nats(kubectl, ns)
        run(kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
        run(
            kubectl, "apply", "--server-side", "-f", str(ROOT / "charts/polaris-twin-operator/crds")
        )
        repo, _, tag = IMAGE.rpartition(":")
        run(
            helm,
            "upgrade",
            "--install",
            "polaris-e2e",
            str(ROOT / "charts/polaris-twin-operator"),
            "-n",
            ns,
            "--wait",
            "--timeout",
            "5m",
            "--set",
            f"image.repository={repo}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=IfNotPresent",
            "--set",
            f"watchNamespaces={{{ns}}}",
        )
        run(kubectl, "-n", ns, "rollout", "status", "deploy/nats", "--timeout=180s")
        yield ns
    finally:
        run(helm, "uninstall", "polaris-e2e", "-n", ns, "--wait", check=False)
        run(kubectl, "delete", "namespace", ns, "--wait=false", check=False)


def _install_nats(kubectl: str, ns: str) -> None:
    labels = {"app.kubernetes.io/name": "nats"}
    manifests = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "nats", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "nats",
                                "image": NATS_IMAGE,
                                "args": ["-p", "4222"],
                                "ports": [{"name": "client", "containerPort": 4222}],
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "nats", "namespace": ns},
            "spec": {
                "selector": labels,
                "ports": [{"name": "client", "port": 4222, "targetPort": "client"}],
            },
        },
    ]
    run(kubectl, "apply", "-f", "-", input=yaml.safe_dump_all(manifests))


def _twin(ns: str, **spec: object) -> str:
    obj = yaml.safe_load((ROOT / "examples/digitaltwin-mock.yaml").read_text())
    obj["metadata"]["namespace"] = ns
    obj["spec"]["nats"]["url"] = f"nats://nats.{ns}.svc:4222"
    obj["spec"].update(spec)
    return yaml.safe_dump(obj)


def _get(kubectl: str, ns: str, *what: str) -> dict:
    return json.loads(run(kubectl, "-n", ns, "get", *what, "-o", "json").stdout)


def test_mock_twin_becomes_ready_and_serves_grpc_health(tools, namespace):
    kubectl, helm = tools["kubectl"], tools["helm"]
    run(kubectl, "apply", "-f", "-", input=_twin(namespace))
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-mock", "--timeout=300s")
    dt = _get(kubectl, namespace, "dt", "twin-mock")
    assert dt["status"]["endpoint"] == f"twin-mock.{namespace}.svc:50051"
    assert dt["status"]["readyReplicas"] == 1
    printed = run(kubectl, "-n", namespace, "get", "digitaltwins").stdout
    assert "twin-mock" in printed and "mock" in printed and "True" in printed

    run(
        helm,
        "upgrade",
        "polaris-e2e",
        str(ROOT / "charts/polaris-twin-operator"),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        f"tests.twinEndpoint=twin-mock.{namespace}.svc:50051",
        "--wait",
    )
    run(helm, "test", "polaris-e2e", "-n", namespace, "--timeout", "3m")


def test_scale_subresource_and_drift_repair(tools, namespace):
    kubectl = tools["kubectl"]
    run(kubectl, "-n", namespace, "scale", "dt/twin-mock", "--replicas=2")
    deadline = time.monotonic() + 180
    while _get(kubectl, namespace, "deploy", "twin-mock")["spec"]["replicas"] != 2:
        assert time.monotonic() < deadline, "the Deployment never scaled to 2"
        time.sleep(2)
    run(kubectl, "-n", namespace, "delete", "deploy/twin-mock", "--wait=true")
    deadline = time.monotonic() + 60
    while run(kubectl, "-n", namespace, "get", "deploy/twin-mock", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the deleted Deployment was not put back"
        time.sleep(2)


def test_the_api_server_refuses_invalid_twins_with_the_rules_message(tools, namespace):
    kubectl = tools["kubectl"]
    proc = run(
        kubectl,
        "apply",
        "-f",
        "-",
        input=_twin(namespace, worldModel={"implementation": "gemini"}),
        check=False,
    )
    assert proc.returncode != 0
    assert "need llm.apiKeySecretRef" in proc.stderr
    proc = run(
        kubectl,
        "apply",
        "-f",
        "-",
        input=_twin(namespace, configOverrides={"nats": {"password": "hunter2"}}),
        check=False,
    )
    assert proc.returncode != 0
    assert "must not carry credentials" in proc.stderr


def test_deleting_the_twin_removes_its_children(tools, namespace):
    kubectl = tools["kubectl"]
    run(kubectl, "-n", namespace, "delete", "dt/twin-mock", "--wait=true", "--timeout=120s")
    deadline = time.monotonic() + 120
    while True:
        left = run(
            kubectl,
            "-n",
            namespace,
            "get",
            "deploy,svc,cm",
            "-l",
            "app.kubernetes.io/instance=twin-mock",
            "-o",
            "name",
        ).stdout.split()
        if not left:
            break
        assert time.monotonic() < deadline, f"children left behind: {left}"
        time.sleep(2)
