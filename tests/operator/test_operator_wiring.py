"""The real operator (kopf handlers + API client) against an emulated Kubernetes API.

``kopf.testing.KopfRunner`` runs ``polaris_operator.handlers`` exactly as the
``polaris-twin-operator`` command does (login through a kubeconfig, watch streams,
progress annotations), against kmock's Kubernetes emulator extended in kube_emulator.py
(uids, resourceVersions, generations, PUT, status subresource, owner garbage collection).
There is no kubelet or Deployment controller: tests write Deployment status themselves,
which is how "status from the Deployment's real state" is exercised.

One operator serves the module; every test works in its own namespace.
"""

from __future__ import annotations

import copy
import itertools
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner

from crd_tools import admitted, load_examples
from kube_emulator import EmulatorThread

DT = "/apis/polaris.io/v1alpha1/namespaces/{ns}/digitaltwins"
DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments"
STS = "/apis/apps/v1/namespaces/{ns}/statefulsets"
PODS = "/api/v1/namespaces/{ns}/pods"
SVC = "/api/v1/namespaces/{ns}/services"
CM = "/api/v1/namespaces/{ns}/configmaps"
EVENTS = "/api/v1/namespaces/{ns}/events"
IMAGE = "registry.test/polaris-twin:0.1.0"
TIMEOUT = 30.0
_ns_counter = itertools.count(1)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


class Api:
    def __init__(self, url: str, emulator: Any) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.emulator = emulator

    def get(self, path: str) -> dict | None:
        r = self.http.get(path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: dict) -> dict:
        r = self.http.post(path, json=obj)
        r.raise_for_status()
        return r.json()

    def patch(self, path: str, patch: dict) -> dict:
        r = self.http.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        r.raise_for_status()
        return r.json()

    def delete(self, path: str) -> None:
        self.http.delete(path).raise_for_status()

    def events(self, ns: str) -> list[dict]:
        return (self.get(EVENTS.format(ns=ns)) or {}).get("items", [])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    with EmulatorThread() as emulator, pytest.MonkeyPatch.context() as mp:
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "emulator",
                    "clusters": [{"name": "emulator", "cluster": {"server": emulator.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                    ],
                }
            )
        )
        mp.setenv("KUBECONFIG", str(kubeconfig))
        mp.setenv("POLARIS_TWIN_IMAGE", IMAGE)
        metrics_port = _free_port()
        mp.setenv("POLARIS_OPERATOR_METRICS_PORT", str(metrics_port))
        api = Api(emulator.url, emulator.emulator)
        api.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with KopfRunner(
            [
                "run",
                "--all-namespaces",
                "--standalone",
                "--verbose",
                "-m",
                "polaris_operator.handlers",
            ],
            timeout=30,
        ) as runner:
            time.sleep(1.0)  # let kopf discover resources and start its watches
            yield api
        assert runner.exception is None, runner.output
        api.http.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ns() -> str:
    return f"test-{next(_ns_counter)}"


def make_twin(api: Api, ns: str, example: str = "digitaltwin-mock.yaml", **spec: Any) -> dict:
    obj = copy.deepcopy(load_examples()[example])
    obj["spec"].update(spec)
    obj = admitted(obj)  # what the API server would store: defaults applied, CEL passed
    obj["metadata"]["namespace"] = ns
    return api.create(DT.format(ns=ns), obj)


def children(api: Api, ns: str, name: str, workload: str = "Deployment") -> dict[str, dict | None]:
    path = DEPLOY if workload == "Deployment" else STS
    return {
        workload: api.get(f"{path.format(ns=ns)}/{name}"),
        "Service": api.get(f"{SVC.format(ns=ns)}/{name}"),
        "ConfigMap": api.get(f"{CM.format(ns=ns)}/{name}-config"),
    }


def condition(dt: dict | None, type_: str) -> tuple[str, str] | None:
    for c in ((dt or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def twin_status(api: Api, ns: str, name: str) -> dict:
    return (api.get(f"{DT.format(ns=ns)}/{name}") or {}).get("status") or {}


def roll_out(api: Api, ns: str, name: str, ready: int) -> None:
    """Play the Deployment controller and kubelet: report `ready` serving replicas."""
    dep = api.get(f"{DEPLOY.format(ns=ns)}/{name}")
    api.patch(
        f"{DEPLOY.format(ns=ns)}/{name}/status",
        {
            "status": {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": dep["spec"]["replicas"],
                "updatedReplicas": dep["spec"]["replicas"],
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        },
    )


def test_create_builds_owned_children_and_reports_progress(cluster, ns):
    dt = make_twin(cluster, ns)
    kids = wait_for(
        "children", lambda: (k := children(cluster, ns, "twin-mock")) and all(k.values()) and k
    )
    for kind, obj in kids.items():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "DigitalTwin",
            "twin-mock",
            dt["metadata"]["uid"],
            True,
        ), kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "polaris-twin-operator"
    container = kids["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    config = yaml.safe_load(kids["ConfigMap"]["data"]["config.yaml"])
    assert config["digital_twin"]["world_model"]["implementation"] == "mock"

    status = wait_for(
        "status", lambda: (s := twin_status(cluster, ns, "twin-mock")).get("conditions") and s
    )
    assert condition({"status": status}, "Progressing")[0] == "True"
    assert condition({"status": status}, "Ready")[0] == "False"
    assert status["endpoint"] == f"twin-mock.{ns}.svc:50051"
    assert status["observedGeneration"] == 1
    assert (
        status["selector"]
        == "app.kubernetes.io/instance=twin-mock,app.kubernetes.io/name=polaris-twin"
    )
    reasons = wait_for(
        "events",
        lambda: (
            {e["reason"] for e in cluster.events(ns)} >= {"Created"}
            and {e["reason"] for e in cluster.events(ns)}
        ),
    )
    assert "Created" in reasons


def test_status_follows_the_deployments_real_state(cluster, ns):
    make_twin(cluster, ns)
    wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    roll_out(cluster, ns, "twin-mock", ready=1)
    wait_for(
        "Ready=True",
        lambda: (
            condition(cluster.get(f"{DT.format(ns=ns)}/twin-mock"), "Ready")
            == ("True", "AllReplicasReady")
        ),
    )
    status = twin_status(cluster, ns, "twin-mock")
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert condition({"status": status}, "Degraded") == ("False", "AllReplicasReady")

    roll_out(cluster, ns, "twin-mock", ready=0)  # the pod stops answering its gRPC probe
    wait_for(
        "Degraded=True",
        lambda: (
            condition(cluster.get(f"{DT.format(ns=ns)}/twin-mock"), "Degraded")
            == ("True", "ReplicasUnavailable")
        ),
    )


def test_update_reconfigures_and_rolls_the_pods(cluster, ns):
    make_twin(cluster, ns)
    first = wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    checksum = first["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    updated = cluster.patch(
        f"{DT.format(ns=ns)}/twin-mock",
        {
            "spec": {
                "replicas": 0,
                "logging": {"level": "WARNING"},
            }
        },
    )
    assert updated["metadata"]["generation"] == 2

    def rolled() -> dict | None:
        dep = children(cluster, ns, "twin-mock")["Deployment"]
        return dep if dep and dep["spec"]["replicas"] == 0 else None

    dep = wait_for("0 replicas", rolled)
    assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum
    config = yaml.safe_load(children(cluster, ns, "twin-mock")["ConfigMap"]["data"]["config.yaml"])
    assert config["digital_twin"]["debugging"]["log_level"] == "WARNING"
    wait_for(
        "observedGeneration 2",
        lambda: twin_status(cluster, ns, "twin-mock").get("observedGeneration") == 2,
    )


def test_a_deleted_deployment_is_put_back(cluster, ns):
    make_twin(cluster, ns)
    old = wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    cluster.delete(f"{DEPLOY.format(ns=ns)}/twin-mock")
    new = wait_for(
        "recreated deployment",
        lambda: (
            (d := children(cluster, ns, "twin-mock")["Deployment"])
            and d["metadata"]["uid"] != old["metadata"]["uid"]
            and d
        ),
    )
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_edited_children_are_put_back(cluster, ns):
    make_twin(cluster, ns)
    kids = wait_for(
        "children", lambda: (k := children(cluster, ns, "twin-mock")) and all(k.values()) and k
    )
    dep = kids["Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/miner:latest"
    cluster.patch(f"{DEPLOY.format(ns=ns)}/twin-mock", {"spec": dep["spec"]})
    wait_for(
        "image restored",
        lambda: (
            children(cluster, ns, "twin-mock")["Deployment"]["spec"]["template"]["spec"][
                "containers"
            ][0]["image"]
            == IMAGE
        ),
    )

    cluster.patch(
        f"{CM.format(ns=ns)}/twin-mock-config", {"data": {"config.yaml": "digital_twin: {}\n"}}
    )
    wait_for(
        "config restored",
        lambda: (
            "implementation: mock"
            in children(cluster, ns, "twin-mock")["ConfigMap"]["data"]["config.yaml"]
        ),
    )

    cluster.delete(f"{SVC.format(ns=ns)}/twin-mock")
    wait_for("service recreated", lambda: children(cluster, ns, "twin-mock")["Service"])
    wait_for("drift event", lambda: "DriftRepaired" in {e["reason"] for e in cluster.events(ns)})


def test_deleting_the_twin_leaves_nothing_behind(cluster, ns):
    make_twin(cluster, ns)
    wait_for("children", lambda: all(children(cluster, ns, "twin-mock").values()))
    cluster.delete(f"{DT.format(ns=ns)}/twin-mock")
    wait_for("children gone", lambda: not any(children(cluster, ns, "twin-mock").values()))
    time.sleep(1.0)  # the operator sees the children vanish: it must not bring them back
    assert not any(children(cluster, ns, "twin-mock").values())
    assert cluster.get(f"{DT.format(ns=ns)}/twin-mock") is None


def test_a_spec_it_cannot_honour_is_reported_not_retried(cluster, ns):
    # The CRD's CEL rules refuse this on a real API server; the operator must still
    # refuse it (objects stored before a rule existed, clusters without CEL).
    obj = admitted(copy.deepcopy(load_examples()["digitaltwin-mock.yaml"]))
    obj["metadata"]["namespace"] = ns
    obj["spec"]["configOverrides"] = {"nats": {"password": "hunter2"}}
    cluster.create(DT.format(ns=ns), obj)
    wait_for(
        "InvalidSpec",
        lambda: (
            condition(cluster.get(f"{DT.format(ns=ns)}/twin-mock"), "Degraded")
            == ("True", "InvalidSpec")
        ),
    )
    status = twin_status(cluster, ns, "twin-mock")
    assert "configOverrides.nats.password" in status["conditions"][0]["message"]
    assert "hunter2" not in str(status)
    warnings = wait_for(
        "warning event",
        lambda: [
            e for e in cluster.events(ns) if e["reason"] == "InvalidSpec" and e["type"] == "Warning"
        ],
    )
    assert "hunter2" not in str(warnings)
    assert not any(children(cluster, ns, "twin-mock").values())


def test_a_foreign_object_with_the_same_name_is_not_taken_over(cluster, ns):
    cluster.create(
        SVC.format(ns=ns),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "twin-mock", "namespace": ns},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    make_twin(cluster, ns)
    wait_for(
        "InvalidSpec",
        lambda: (
            condition(cluster.get(f"{DT.format(ns=ns)}/twin-mock"), "Ready")
            == ("False", "InvalidSpec")
        ),
    )
    assert (
        "not managed by this DigitalTwin"
        in twin_status(cluster, ns, "twin-mock")["conditions"][0]["message"]
    )
    assert children(cluster, ns, "twin-mock")["Service"]["spec"]["ports"] == [{"port": 80}]


def test_secrets_reach_the_pod_only_by_reference(cluster, ns):
    make_twin(cluster, ns, "digitaltwin-gemini.yaml")
    kids = wait_for(
        "children", lambda: (k := children(cluster, ns, "twin-gemini")) and all(k.values()) and k
    )
    env = {
        e["name"]: e for e in kids["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GEMINI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "polaris-gemini",
        "key": "api-key",
    }
    assert "REPLACE-WITH" not in kids["ConfigMap"]["data"]["config.yaml"]


def test_children_are_watched_through_a_server_side_label_selector(cluster):
    requests = [url for agent, url in list(cluster.emulator.seen) if agent.startswith("kopf/")]
    for plural in ("deployments", "services", "configmaps"):
        lists = [u for u in requests if u.startswith("GET ") and f"/{plural}?" in u]
        assert lists, f"kopf never listed {plural}"
        assert all("labelSelector=app.kubernetes.io/managed-by" in u for u in lists), lists


# ----------------------------------------------------------------------- durable twins


def scrape(api: Api) -> dict[str, float]:
    """The operator's /metrics as {series: value} (prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(api.metrics_url, timeout=5).text
    return {
        f"{s.name}{sorted(s.labels.items()) if s.labels else ''}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scaling_a_twin_out_moves_it_to_a_statefulset_with_own_consumers(cluster, ns):
    make_twin(cluster, ns)
    old = wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    cluster.patch(
        f"{DT.format(ns=ns)}/twin-mock",
        {"spec": {"replicas": 3, "durability": {"jetstream": {"enabled": True}}}},
    )
    sts = wait_for(
        "statefulset",
        lambda: (
            (s := cluster.get(f"{STS.format(ns=ns)}/twin-mock"))
            and s["spec"]["replicas"] == 3
            and s
        ),
    )
    assert sts["spec"]["serviceName"] == "twin-mock-pods"
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POLARIS_DT__NATS__JETSTREAM__DURABLE"]["value"] == "$(POD_NAMESPACE)_$(POD_NAME)"
    wait_for("headless service", lambda: cluster.get(f"{SVC.format(ns=ns)}/twin-mock-pods"))
    wait_for(
        "old deployment gone", lambda: cluster.get(f"{DEPLOY.format(ns=ns)}/twin-mock") is None
    )
    config = yaml.safe_load(
        cluster.get(f"{CM.format(ns=ns)}/twin-mock-config")["data"]["config.yaml"]
    )
    assert config["digital_twin"]["nats"]["jetstream"]["enabled"] is True
    assert config["digital_twin"]["nats"]["queue_group"] == ""
    assert old["metadata"]["uid"] != sts["metadata"]["uid"]
    wait_for(
        "WorkloadReplaced event",
        lambda: "WorkloadReplaced" in {e["reason"] for e in cluster.events(ns)},
    )
    wait_for(
        "status names the StatefulSet",
        lambda: twin_status(cluster, ns, "twin-mock").get("workloadKind") == "StatefulSet",
    )


def test_turning_snapshots_on_replaces_the_statefulset_with_a_volume(cluster, ns):
    make_twin(cluster, ns, durability={"jetstream": {"enabled": True}})
    first = wait_for("statefulset", lambda: cluster.get(f"{STS.format(ns=ns)}/twin-mock"))
    assert "volumeClaimTemplates" not in first["spec"]
    cluster.patch(
        f"{DT.format(ns=ns)}/twin-mock",
        {"spec": {"durability": {"snapshots": {"enabled": True, "volumeSize": "2Gi"}}}},
    )
    second = wait_for(
        "replaced statefulset",
        lambda: (
            (s := cluster.get(f"{STS.format(ns=ns)}/twin-mock"))
            and s["metadata"]["uid"] != first["metadata"]["uid"]
            and s
        ),
    )
    (claim,) = second["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    wait_for("Replaced event", lambda: "Replaced" in {e["reason"] for e in cluster.events(ns)})


def test_an_edited_statefulset_is_put_back_and_counted(cluster, ns):
    make_twin(cluster, ns, durability={"jetstream": {"enabled": True}})
    sts = wait_for("statefulset", lambda: cluster.get(f"{STS.format(ns=ns)}/twin-mock"))
    before = scrape(cluster).get(
        "polaris_operator_drift_repairs_total[('resource', 'StatefulSet')]", 0
    )
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/miner:latest"
    cluster.patch(f"{STS.format(ns=ns)}/twin-mock", {"spec": sts["spec"]})
    wait_for(
        "image restored",
        lambda: (
            cluster.get(f"{STS.format(ns=ns)}/twin-mock")["spec"]["template"]["spec"]["containers"][
                0
            ]["image"]
            == IMAGE
        ),
    )
    metrics = wait_for(
        "drift counted",
        lambda: (
            (m := scrape(cluster)).get(
                "polaris_operator_drift_repairs_total[('resource', 'StatefulSet')]", 0
            )
            > before
            and m
        ),
    )
    assert metrics["polaris_operator_reconciles_total[('trigger', 'child')]"] >= 1
    assert metrics["polaris_operator_reconciles_total[('trigger', 'twin')]"] >= 1
    assert metrics["polaris_operator_reconcile_duration_seconds_count"] >= 2


def _pod(ns: str, name: str, twin: str, **status: Any) -> dict:
    labels = {
        "app.kubernetes.io/name": "polaris-twin",
        "app.kubernetes.io/instance": twin,
        "app.kubernetes.io/managed-by": "polaris-twin-operator",
        "polaris.io/digitaltwin": twin,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "twin", "image": "registry.test/nope:1"}]},
        "status": status,
    }


def test_pod_level_causes_reach_ready_and_become_events(cluster, ns):
    make_twin(cluster, ns, image="registry.test/nope:1")
    wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    cluster.create(
        PODS.format(ns=ns),
        _pod(
            ns,
            "twin-mock-6d4b9-x2x7q",
            "twin-mock",
            phase="Pending",
            containerStatuses=[
                {
                    "name": "twin",
                    "ready": False,
                    "restartCount": 0,
                    "image": "registry.test/nope:1",
                    "imageID": "",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "registry.test/nope:1"',
                        }
                    },
                }
            ],
        ),
    )

    def ready_message() -> str | None:
        for c in twin_status(cluster, ns, "twin-mock").get("conditions") or []:
            if c["type"] == "Ready" and c["reason"] == "ImagePullBackOff":
                return c["message"]
        return None

    msg = wait_for("ImagePullBackOff in Ready", ready_message)
    assert "pod twin-mock-6d4b9-x2x7q: ImagePullBackOff: Back-off pulling image" in msg
    event = wait_for(
        "Warning event",
        lambda: [
            e
            for e in cluster.events(ns)
            if e["reason"] == "ImagePullBackOff" and e["type"] == "Warning"
        ],
    )
    assert "twin-mock-6d4b9-x2x7q" in event[0]["message"]
    metrics = scrape(cluster)
    assert metrics["polaris_operator_pod_problems[('reason', 'ImagePullBackOff')]"] >= 1


def test_a_pod_stuck_on_a_missing_secret_volume_reaches_ready(cluster, ns):
    make_twin(cluster, ns, auth={"adminTokenSecretRef": {"name": "no-such-secret"}})
    wait_for("deployment", lambda: children(cluster, ns, "twin-mock")["Deployment"])
    # What the kubelet leaves when a Secret volume cannot be mounted: no reason but
    # ContainerCreating, long after the pod was scheduled.
    cluster.create(
        PODS.format(ns=ns),
        _pod(
            ns,
            "twin-mock-6d4b9-k8s2v",
            "twin-mock",
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2020-01-01T00:00:00Z",
                }
            ],
            containerStatuses=[
                {
                    "name": "twin",
                    "ready": False,
                    "restartCount": 0,
                    "image": IMAGE,
                    "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
            ],
        ),
    )

    def ready_message() -> str | None:
        for c in twin_status(cluster, ns, "twin-mock").get("conditions") or []:
            if c["type"] == "Ready" and c["reason"] == "ContainerCreating":
                return c["message"]
        return None

    msg = wait_for("ContainerCreating in Ready", ready_message)
    assert "pod twin-mock-6d4b9-k8s2v: ContainerCreating: containers not created" in msg
    wait_for(
        "Warning event",
        lambda: [
            e
            for e in cluster.events(ns)
            if e["reason"] == "ContainerCreating" and e["type"] == "Warning"
        ],
    )


def test_one_twin_per_managed_system(cluster, ns):
    for name, systems in (("twin-web", ["web-*"]), ("twin-db", ["db", "cache"])):
        obj = admitted(copy.deepcopy(load_examples()["digitaltwin-mock.yaml"]) | {})
        obj["metadata"] = {"name": name, "namespace": ns}
        obj["spec"]["systems"] = systems
        cluster.create(DT.format(ns=ns), admitted(obj))
    configs = {
        name: yaml.safe_load(
            wait_for(
                f"{name} config", lambda n=name: cluster.get(f"{CM.format(ns=ns)}/{n}-config")
            )["data"]["config.yaml"]
        )["digital_twin"]
        for name in ("twin-web", "twin-db")
    }
    assert configs["twin-web"]["systems"] == ["web-*"]
    assert configs["twin-db"]["systems"] == ["db", "cache"]
    # Neither shares a queue group with the other: each receives every message and keeps
    # only its own systems.
    assert (
        configs["twin-web"]["nats"]["queue_group"]
        == configs["twin-db"]["nats"]["queue_group"]
        == ""
    )
    for name in ("twin-web", "twin-db"):
        svc = wait_for(f"{name} service", lambda n=name: cluster.get(f"{SVC.format(ns=ns)}/{n}"))
        assert svc["spec"]["selector"]["app.kubernetes.io/instance"] == name


def _grants(request: str) -> tuple[str, str, str] | None:
    """A request line -> (API group, resource, RBAC verb), None for discovery.

    ``GET /apis/apps/v1/namespaces/x/deployments?watch=true`` -> ``("apps", "deployments",
    "watch")``.
    """
    from urllib.parse import parse_qs, urlsplit

    method, url = request.split(" ", 1)
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) > 1:
        group, rest = segments[1], segments[3:]
    else:
        return None
    if not rest:
        return None  # discovery
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    plural, name, sub = (
        rest[0],
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
    )
    resource = f"{plural}/{sub}" if sub else plural
    verb = {
        "GET": "get" if name else ("watch" if parse_qs(parts.query).get("watch") else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }[method]
    return group, resource, verb


def test_the_charts_rbac_allows_every_call_the_operator_made(cluster):
    """Runs last: every request kopf and our client sent during this module, against the
    ClusterRole the Helm chart grants (an RBAC gap would be a 403 on a real cluster)."""
    from test_helm_chart import HELM, by_kind, render

    if HELM is None:
        pytest.skip("no helm binary")
    (role,) = by_kind(render(), "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    used = {
        g
        for agent, request in list(cluster.emulator.seen)
        if agent.startswith(("kopf/", "polaris-twin-operator"))
        and (g := _grants(request)) is not None
    }
    assert ("", "pods", "list") in used and ("polaris.io", "digitaltwins/status", "patch") in used
    assert not used - granted, f"calls the chart's RBAC does not allow: {sorted(used - granted)}"
