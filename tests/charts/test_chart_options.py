"""Optional chart features: PDB, ServiceMonitor, PodMonitor, Grafana dashboard, image digest,
NOTES that point at files the packaged chart really contains.

ServiceMonitor and PodMonitor are prometheus-operator custom resources (no official schema
to validate against offline), so they are checked for what makes them work: their
selectors match the labels of the objects they must find (the operator's Service as the
chart renders it; the twin pods as the operator's own builders render them) and their
port names exist there.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_helm_chart import CHART, HELM, K8S_VERSION, ROOT, by_kind, helm, render

pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary")

ALL_OPTIONS = (
    "podDisruptionBudget.enabled=true",
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "grafanaDashboard.enabled=true",
)


def test_optional_features_are_off_by_default():
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"PodDisruptionBudget", "ServiceMonitor", "PodMonitor"}
    assert not list(by_kind(render(), "ConfigMap"))


def test_pod_disruption_budget_covers_the_operator_pods():
    docs = render("podDisruptionBudget.enabled=true", "replicaCount=2")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    kubernetes_validate.validate(pdb, K8S_VERSION, strict=True)
    (dep,) = by_kind(docs, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    (pdb,) = by_kind(
        render("podDisruptionBudget.enabled=true", "podDisruptionBudget.minAvailable=1"),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}


def test_service_monitor_finds_the_operators_metrics_port():
    docs = render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=kube-prom")
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prom"
    (svc,) = by_kind(docs, "Service")
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # No metrics, no ServiceMonitor pointing at nothing.
    assert not by_kind(
        render("serviceMonitor.enabled=true", "metrics.enabled=false"), "ServiceMonitor"
    )


def test_pod_monitor_finds_the_twin_pods_the_operator_builds():
    from polaris_operator import builders as b

    from crd_tools import admitted, load_examples

    docs = render("podMonitor.enabled=true", "watchNamespaces={lab}")
    (pm,) = by_kind(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["lab"]}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    for name in sorted(load_examples()):
        _, children = b.build_children(admitted(load_examples()[name]), default_image="i:1")
        template = children[-1]["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert endpoint["port"] in ports, name  # metricsPort defaults to 9464
    # The twin's name becomes the "digitaltwin" label the dashboard filters on.
    (relabel,) = endpoint["relabelings"]
    assert relabel == {
        "sourceLabels": ["__meta_kubernetes_pod_label_polaris_io_digitaltwin"],
        "targetLabel": "digitaltwin",
    }
    (pm,) = by_kind(render("podMonitor.enabled=true"), "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}


def test_grafana_dashboard_ships_as_a_labelled_config_map():
    docs = render(
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.annotations.grafana_folder=POLARIS",
    )
    (cm,) = by_kind(docs, "ConfigMap")
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "POLARIS"}
    shipped = json.loads((CHART / "dashboards" / "polaris-twin.json").read_text())
    assert json.loads(cm["data"]["polaris-twin.json"]) == shipped


def test_an_image_digest_pins_the_operator_and_the_twins():
    digest = "sha256:" + "ab" * 32
    docs = render(f"image.digest={digest}", "image.tag=9.9.9")
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/polaris/polaris-twin@{digest}"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["POLARIS_TWIN_IMAGE"] == c["image"]
    for doc in docs:
        if doc["kind"] not in ("ClusterKopfPeering",):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_option_at_once_renders_valid_objects():
    docs = render(*ALL_OPTIONS, "replicaCount=2", "watchNamespaces={a,b}")
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "kopf.dev/")):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_chart_examples_are_the_repositorys_examples():
    for path in sorted((ROOT / "examples").glob("digitaltwin-*.yaml")):
        copy = CHART / "examples" / path.name
        assert copy.read_bytes() == path.read_bytes(), f"cp {path} {copy}"


def test_notes_point_at_files_the_packaged_chart_contains(tmp_path: Path):
    helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        packaged = set(tar.getnames())
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    referenced = set(re.findall(r"polaris-twin-operator/([\w./-]+[\w/])", notes))
    assert referenced >= {
        "examples/digitaltwin-mock.yaml",
        "dashboards/polaris-twin.json",
        "crds/",
    }
    for path in referenced:
        full = f"polaris-twin-operator/{path}"
        assert full in packaged or any(p.startswith(full) for p in packaged), path


def test_notes_render_for_every_option(tmp_path: Path):
    # helm renders NOTES.txt only on install (which wants a cluster): render it as the data
    # of a ConfigMap in a scratch copy of the chart instead, with the same values.
    chart = tmp_path / "polaris-twin-operator"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes.txt") . | indent 4 }}\n'
    )
    args = ["template", "polaris", str(chart), "-n", "polaris-system"]
    for option in ALL_OPTIONS:
        args += ["--set", option]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    (notes,) = [d["data"]["notes"] for d in docs if d["metadata"]["name"] == "notes"]
    assert "PodMonitor polaris-polaris-twin-operator-twins scrapes the twins" in notes
    assert "ConfigMap polaris-polaris-twin-operator-dashboard" in notes
    assert "rollout status deployment/polaris-polaris-twin-operator" in notes
    assert "{{" not in notes


def test_the_installed_crd_mounts_a_twins_admin_token_from_its_secret_as_a_file():
    """From the CRD as helm installs it to the pod: the example's adminTokenSecretRef is
    admitted, the builders mount the Secret read-only (no env, no ConfigMap), the twin's
    config names the file, and every object is valid for Kubernetes, strictly."""
    from polaris_operator import builders as b

    from crd_tools import admit, load_examples

    docs = render(include_crds=True)
    (crd,) = [
        d
        for d in by_kind(docs, "CustomResourceDefinition")
        if d["metadata"]["name"] == "digitaltwins.polaris.io"
    ]
    example = load_examples()["digitaltwin-statistical.yaml"]
    dt, errors = admit(example, crd)
    assert errors == []
    assert dt["spec"]["auth"]["adminTokenSecretRef"] == {
        "name": "polaris-twin-admin",
        "key": "admin-token",  # the CRD's default
    }
    dt["metadata"]["namespace"] = "polaris"
    config, children = b.build_children(dt, default_image="i:1")
    assert config["digital_twin"]["auth"]["admin_token_file"] == (
        "/var/run/secrets/polaris/admin/token"
    )
    pod = children[-1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [
        v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "polaris-twin-admin"
    ]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and "subPath" not in mount
    assert not any(
        e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "polaris-twin-admin"
        for e in container["env"]
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    (configmap,) = by_kind(children, "ConfigMap")
    secrets = (ROOT / "charts/polaris-twin-operator/examples/digitaltwin-secrets.yaml").read_text()
    placeholder = [
        doc["stringData"]["admin-token"]
        for doc in yaml.safe_load_all(secrets)
        if doc["metadata"]["name"] == "polaris-twin-admin"
    ]
    assert placeholder and placeholder[0] not in json.dumps(configmap)
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
