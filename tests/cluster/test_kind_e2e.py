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
schema, CEL cost limits, transition rules) and refuses bad twins with the rule's message
(also through the scale subresource); the chart's namespaced RBAC (a Role in the watched
namespace) is enough; the image starts as UID 10001 on a read-only root filesystem; the
kubelet's gRPC probes see SERVING, and a NATS outage makes pods unready without restarting
them; a JetStream twin scales out as a StatefulSet and a snapshot twin gets a bound
PersistentVolumeClaim per pod; an image that cannot be pulled is named in the Ready
condition and an Event; the operator's and the twins' /metrics answer through the API
server's proxy; the admin token is a mounted Secret file that rotates without a restart;
two twins with spec.systems on one NATS answer only for their own systems on their Services'
http port; garbage collection removes the children; ``helm test`` passes.
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
                                "args": ["-p", "4222", "-js", "-sd", "/tmp/js"],
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


def _wait(what: str, probe, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def _ready(kubectl: str, ns: str, name: str) -> dict | None:
    dt = _get(kubectl, ns, "dt", name)
    for cond in (dt.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond
    return None


def test_replicas_need_jetstream_even_through_kubectl_scale(tools, namespace):
    kubectl = tools["kubectl"]
    message = "replicas > 1 needs durability.jetstream.enabled"
    proc = run(kubectl, "-n", namespace, "scale", "dt/twin-mock", "--replicas=2", check=False)
    if proc.returncode != 0:  # the API server ran the CEL rule on the scale write
        assert message in proc.stderr
    else:  # it did not: the operator refuses, scales nothing, and says why
        cond = _wait(
            "InvalidSpec",
            lambda: (
                (c := _ready(kubectl, namespace, "twin-mock"))
                and c["reason"] == "InvalidSpec"
                and c
            ),
        )
        assert message in cond["message"]
        assert _get(kubectl, namespace, "deploy", "twin-mock")["spec"]["replicas"] == 1
        run(kubectl, "-n", namespace, "scale", "dt/twin-mock", "--replicas=1")
        run(
            kubectl,
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            "dt/twin-mock",
            "--timeout=300s",
        )


def test_a_nats_outage_makes_twins_unready_not_restarted(tools, namespace):
    kubectl = tools["kubectl"]
    run(kubectl, "-n", namespace, "scale", "deploy/nats", "--replicas=0")
    try:
        _wait(
            "Ready=False",
            lambda: (c := _ready(kubectl, namespace, "twin-mock")) and c["status"] == "False",
            timeout=120,
        )
        time.sleep(70)  # longer than livenessProbe periodSeconds x failureThreshold (60 s)
        pods = _get(kubectl, namespace, "pods", "-l", "app.kubernetes.io/instance=twin-mock")
        for pod in pods["items"]:
            for cs in pod["status"].get("containerStatuses") or []:
                assert cs["restartCount"] == 0, f"{pod['metadata']['name']} was restarted"
    finally:
        run(kubectl, "-n", namespace, "scale", "deploy/nats", "--replicas=1")
    run(kubectl, "-n", namespace, "rollout", "status", "deploy/nats", "--timeout=180s")
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-mock", "--timeout=300s")


def test_a_jetstream_twin_scales_out_as_a_statefulset_and_drift_is_repaired(tools, namespace):
    kubectl = tools["kubectl"]
    run(
        kubectl,
        "-n",
        namespace,
        "patch",
        "dt/twin-mock",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"durability": {"jetstream": {"enabled": True}}}}),
    )
    run(kubectl, "-n", namespace, "scale", "dt/twin-mock", "--replicas=2")
    _wait(
        "a StatefulSet of 2",
        lambda: (
            run(
                kubectl,
                "-n",
                namespace,
                "get",
                "sts/twin-mock",
                "-o",
                "jsonpath={.spec.replicas}",
                check=False,
            ).stdout
            == "2"
        ),
    )
    _wait(
        "the Deployment removed",
        lambda: (
            run(kubectl, "-n", namespace, "get", "deploy/twin-mock", check=False).returncode != 0
        ),
    )
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-mock", "--timeout=300s")
    assert _get(kubectl, namespace, "dt", "twin-mock")["status"]["readyReplicas"] == 2
    run(kubectl, "-n", namespace, "delete", "sts/twin-mock", "--wait=true")
    _wait(
        "the deleted StatefulSet put back",
        lambda: run(kubectl, "-n", namespace, "get", "sts/twin-mock", check=False).returncode == 0,
        timeout=60,
    )
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-mock", "--timeout=300s")


def test_snapshots_get_a_bound_volume_per_pod(tools, namespace):
    kubectl = tools["kubectl"]
    run(
        kubectl,
        "apply",
        "-f",
        "-",
        input=_twin(
            namespace, durability={"snapshots": {"enabled": True, "volumeSize": "64Mi"}}
        ).replace("name: twin-mock", "name: twin-snap"),
    )
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-snap", "--timeout=300s")
    pvc = _get(kubectl, namespace, "pvc", "snapshots-twin-snap-0")
    assert pvc["status"]["phase"] == "Bound"
    proc = run(
        kubectl,
        "-n",
        namespace,
        "patch",
        "dt/twin-snap",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"durability": {"snapshots": {"volumeSize": "1Gi"}}}}),
        check=False,
    )
    assert proc.returncode != 0
    assert "volumeSize cannot change while snapshots are on" in proc.stderr
    run(kubectl, "-n", namespace, "delete", "dt/twin-snap", "--wait=true")


def test_an_image_that_cannot_be_pulled_is_named_in_status_and_events(tools, namespace):
    kubectl = tools["kubectl"]
    run(
        kubectl,
        "apply",
        "-f",
        "-",
        input=_twin(namespace, image="registry.invalid/polaris/nope:0").replace(
            "name: twin-mock", "name: twin-broken"
        ),
    )
    cond = _wait(
        "the pull failure in Ready",
        lambda: (
            (c := _ready(kubectl, namespace, "twin-broken"))
            and c["reason"] in ("ImagePullBackOff", "ErrImagePull")
            and c
        ),
        timeout=240,
    )
    assert "registry.invalid/polaris/nope:0" in cond["message"]
    events = _get(
        kubectl,
        namespace,
        "events",
        "--field-selector",
        "involvedObject.kind=DigitalTwin,involvedObject.name=twin-broken",
    )
    assert {e["reason"] for e in events["items"]} & {"ImagePullBackOff", "ErrImagePull"}
    run(kubectl, "-n", namespace, "delete", "dt/twin-broken", "--wait=true")


def test_metrics_answer_through_the_api_servers_proxy(tools, namespace):
    kubectl = tools["kubectl"]
    svc = "polaris-e2e-polaris-twin-operator"
    text = run(
        kubectl,
        "get",
        "--raw",
        f"/api/v1/namespaces/{namespace}/services/{svc}:metrics/proxy/metrics",
    ).stdout
    assert "polaris_operator_reconciles_total" in text
    pods = _get(kubectl, namespace, "pods", "-l", "app.kubernetes.io/instance=twin-mock")
    pod = pods["items"][0]["metadata"]["name"]
    text = run(
        kubectl, "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}:9464/proxy/metrics"
    ).stdout
    assert "polaris_twin_events_received_total" in text


_MANAGE_IN_POD = """
import json, sys, urllib.error, urllib.request
headers = {"Content-Type": "application/json"}
if sys.argv[1]:
    headers["Authorization"] = "Bearer " + sys.argv[1]
req = urllib.request.Request("http://127.0.0.1:8080/v1/manage", method="POST", headers=headers,
                             data=json.dumps({"operation": "reset_state"}).encode())
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def test_the_admin_token_is_a_mounted_secret_file_and_rotates_without_a_restart(
    tools, namespace
):
    kubectl = tools["kubectl"]

    def secret(token: str) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "twin-admin", "namespace": namespace},
                "stringData": {"admin-token": token},
            }
        )

    def manage(token: str) -> str:
        return run(
            kubectl, "-n", namespace, "exec", "deploy/twin-auth", "--",
            "python", "-c", _MANAGE_IN_POD, token,
        ).stdout.strip()  # fmt: skip

    run(kubectl, "apply", "-f", "-", input=secret("e2e-not-a-real-token"))
    run(
        kubectl,
        "apply",
        "-f",
        "-",
        input=_twin(namespace, auth={"adminTokenSecretRef": {"name": "twin-admin"}}).replace(
            "name: twin-mock", "name: twin-auth"
        ),
    )
    run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "dt/twin-auth", "--timeout=300s")
    cm = run(kubectl, "-n", namespace, "get", "cm/twin-auth-config", "-o", "yaml").stdout
    dt = run(kubectl, "-n", namespace, "get", "dt/twin-auth", "-o", "yaml").stdout
    assert "e2e-not-a-real-token" not in cm and "e2e-not-a-real-token" not in dt
    assert "admin_token_file: /var/run/secrets/polaris/admin/token" in cm
    pod = _get(kubectl, namespace, "deploy", "twin-auth")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not any("ADMIN" in e["name"] for e in container["env"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin-token"]["secret"]["secretName"] == "twin-admin"
    # The twin (non-root, read-only root filesystem) reads the mounted file.
    assert manage("") == "401"
    assert manage("wrong") == "403"
    assert manage("e2e-not-a-real-token") == "200"
    pods = _get(kubectl, namespace, "pods", "-l", "app.kubernetes.io/instance=twin-auth")
    (before,) = [(p["metadata"]["name"], p["status"]["containerStatuses"][0]["restartCount"])
                 for p in pods["items"]]  # fmt: skip
    # Rotation: the kubelet refreshes the volume (up to its sync period plus the cache TTL).
    run(kubectl, "apply", "-f", "-", input=secret("e2e-rotated-token"))
    _wait("the rotated token", lambda: manage("e2e-rotated-token") == "200", timeout=180)
    assert manage("e2e-not-a-real-token") == "403"
    pods = _get(kubectl, namespace, "pods", "-l", "app.kubernetes.io/instance=twin-auth")
    after = [(p["metadata"]["name"], p["status"]["containerStatuses"][0]["restartCount"])
             for p in pods["items"]]  # fmt: skip
    assert after == [before]  # same pod, no restart
    run(kubectl, "-n", namespace, "delete", "dt/twin-auth", "--wait=true")


_PUBLISH_IN_POD = """
import asyncio, json, sys, time
import nats
async def main():
    nc = await nats.connect(sys.argv[1])
    t0 = time.time() - 60
    events = [{"name": "load", "value": float(i), "source": s, "timestamp": t0 + i}
              for i, s in enumerate(["swim", "web-1", "db"] * 5)]
    await nc.publish("polaris.telemetry.events.batch", json.dumps({"events": events}).encode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
"""
_QUERY_IN_POD = """
import json, sys, urllib.error, urllib.request
body = {"query_type": "current_state", "parameters": {"system": sys.argv[2]}}
req = urllib.request.Request(sys.argv[1] + "/v1/query", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.load(resp)
except urllib.error.HTTPError as err:
    doc = {"http": err.code}
print(json.dumps({"success": bool(doc.get("success")), "explanation": doc.get("explanation", "")}))
"""


def test_two_twins_answer_only_for_their_systems_on_the_services_http_port(tools, namespace):
    """One NATS, two DigitalTwins with spec.systems; queried over the REST gateway through
    each twin's Service port http (cluster DNS and Service routing, from inside a pod)."""
    kubectl = tools["kubectl"]
    for name, systems in (("twin-swim", ["swim"]), ("twin-web", ["web-*"])):
        doc = _twin(namespace, systems=systems).replace("name: twin-mock", f"name: {name}")
        run(kubectl, "apply", "-f", "-", input=doc)
    for name in ("twin-swim", "twin-web"):
        run(kubectl, "-n", namespace, "wait", "--for=condition=Ready", f"dt/{name}",
            "--timeout=300s")  # fmt: skip
        svc = _get(kubectl, namespace, "svc", name)
        assert {"name": "http", "port": 8080} in [
            {k: p[k] for k in ("name", "port")} for p in svc["spec"]["ports"]
        ]

    def in_pod(script: str, *args: str) -> str:
        return run(
            kubectl, "-n", namespace, "exec", "deploy/twin-swim", "--",
            "python", "-c", script, *args,
        ).stdout.strip()  # fmt: skip

    in_pod(_PUBLISH_IN_POD, f"nats://nats.{namespace}.svc:4222")

    def answer(twin: str, system: str) -> dict:
        url = f"http://{twin}.{namespace}.svc:8080"
        return json.loads(in_pod(_QUERY_IN_POD, url, system))

    _wait("twin-swim to hold swim", lambda: answer("twin-swim", "swim")["success"], 60)
    _wait("twin-web to hold web-1", lambda: answer("twin-web", "web-1")["success"], 60)
    for twin, foreign in (("twin-swim", "web-1"), ("twin-swim", "db"), ("twin-web", "swim")):
        got = answer(twin, foreign)
        assert not got["success"] and f"unknown system '{foreign}'" in got["explanation"], got
    for name in ("twin-swim", "twin-web"):
        run(kubectl, "-n", namespace, "delete", f"dt/{name}", "--wait=true")


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
            "deploy,sts,svc,cm",
            "-l",
            "app.kubernetes.io/instance=twin-mock",
            "-o",
            "name",
        ).stdout.split()
        if not left:
            break
        assert time.monotonic() < deadline, f"children left behind: {left}"
        time.sleep(2)
