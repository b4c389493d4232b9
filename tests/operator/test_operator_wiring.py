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
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from crd_tools import admitted, load_examples
from kopf.testing import KopfRunner
from kube_emulator import EmulatorThread

DT = "/apis/polaris.io/v1alpha1/namespaces/{ns}/digitaltwins"
DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments"
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
        api = Api(emulator.url, emulator.emulator)
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


@pytest.fixture
def ns() -> str:
    return f"test-{next(_ns_counter)}"


def make_twin(api: Api, ns: str, example: str = "digitaltwin-mock.yaml", **spec: Any) -> dict:
    obj = copy.deepcopy(load_examples()[example])
    obj["spec"].update(spec)
    obj = admitted(obj)  # what the API server would store: defaults applied, CEL passed
    obj["metadata"]["namespace"] = ns
    return api.create(DT.format(ns=ns), obj)


def children(api: Api, ns: str, name: str) -> dict[str, dict | None]:
    return {
        "Deployment": api.get(f"{DEPLOY.format(ns=ns)}/{name}"),
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
                "replicas": 3,
                "logging": {"level": "WARNING"},
            }
        },
    )
    assert updated["metadata"]["generation"] == 2

    def rolled() -> dict | None:
        dep = children(cluster, ns, "twin-mock")["Deployment"]
        return dep if dep and dep["spec"]["replicas"] == 3 else None

    dep = wait_for("3 replicas", rolled)
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
