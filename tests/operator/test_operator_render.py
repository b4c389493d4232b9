"""``polaris-twin-operator render``: the operator's manifests for a DigitalTwin file, as YAML.

Run as a real subprocess (``python -m polaris_operator render``). Its output must be what
the operator applies: the same builders on the object as the API server stores it
(defaults applied; crd_tools plays the API server), every manifest valid for Kubernetes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from polaris_operator import builders as b

from crd_tools import CRD_PATH, EXAMPLES, admitted, load_examples

K8S_VERSION = "1.35.0"
IMAGE = "registry.test/polaris-twin:1.0"
ROOT = Path(__file__).resolve().parents[2]


def render(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polaris_operator", "render", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_the_package_ships_the_same_crd():
    shipped = ROOT / "operator" / "polaris_operator" / "crds" / "digitaltwins.polaris.io.yaml"
    assert shipped.read_bytes() == CRD_PATH.read_bytes(), (
        "cp crds/digitaltwins.polaris.io.yaml operator/polaris_operator/crds/"
    )


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_render_prints_what_the_operator_applies(name):
    proc = render("-f", str(EXAMPLES / name), "--image", IMAGE)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    stored = admitted(load_examples()[name])  # what the API server hands the operator
    _, expected = b.build_children(stored, default_image=IMAGE)
    assert docs == expected
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert proc.stdout.startswith("# Rendered by polaris-twin-operator")
    assert "config.yaml: |" in proc.stdout  # the config file reads as a block


def test_several_twins_from_stdin_into_another_namespace():
    mock = (EXAMPLES / "digitaltwin-mock.yaml").read_text()
    other = mock.replace("name: twin-mock", "name: twin-other")
    proc = render("-f", "-", "--image", IMAGE, "-n", "lab", stdin=mock + "\n---\n" + other)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {d["metadata"]["namespace"] for d in docs} == {"lab"}
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == [
        "twin-mock",
        "twin-other",
    ]


def test_an_invalid_spec_gets_the_operators_status_message(tmp_path):
    doc = yaml.safe_load((EXAMPLES / "digitaltwin-mock.yaml").read_text())
    doc["spec"]["replicas"] = 2  # what CEL refuses; the operator refuses it too
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = render("-f", str(path), "--image", IMAGE)
    assert proc.returncode == 1 and proc.stdout == ""
    stored = admitted({**doc, "spec": {**doc["spec"], "replicas": 1}})
    stored["spec"]["replicas"] = 2
    with pytest.raises(b.SpecError) as err:
        b.build_children(stored, default_image=IMAGE)
    status = b.invalid_spec_status(stored, str(err.value), now="2026-01-01T00:00:00Z")
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert proc.stderr == f"InvalidSpec: DigitalTwin default/twin-mock: {ready['message']}\n"


def test_without_an_image_it_says_what_the_operator_would(tmp_path):
    proc = render("-f", str(EXAMPLES / "digitaltwin-mock.yaml"))
    assert proc.returncode == 1
    assert "spec.image is empty and the operator has no default twin image" in proc.stderr
    assert "hint: pass --image" in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("kind: ConfigMap\napiVersion: v1\n", "holds no polaris.io DigitalTwin"),
        ("a: [unclosed\n", "is not valid YAML"),
    ],
)
def test_unusable_input_is_a_usage_error(tmp_path, content, message):
    path = tmp_path / "x.yaml"
    path.write_text(content)
    proc = render("-f", str(path), "--image", IMAGE)
    assert proc.returncode == 2 and message in proc.stderr
    proc = render("-f", str(tmp_path / "missing.yaml"), "--image", IMAGE)
    assert proc.returncode == 2 and "cannot read" in proc.stderr
