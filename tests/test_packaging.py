"""Packaging: every package folder is listed, and `operator` stays the standard library's."""

from __future__ import annotations

import operator
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "twin").rglob("__init__.py")
    }
    found |= {
        ".".join(p.parent.relative_to(ROOT / "operator").parts)
        for p in (ROOT / "operator").rglob("__init__.py")
    }
    assert found <= listed, f"missing in pyproject packages: {sorted(found - listed)}"
    assert cfg["package-dir"]["polaris_operator"] == "operator/polaris_operator"


def test_the_operator_folder_is_not_a_package_that_could_shadow_the_stdlib() -> None:
    import subprocess
    import sys

    assert not (ROOT / "operator" / "__init__.py").exists()
    r = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 0
        and "polaris_operator" not in r.stdout
        and not r.stdout.startswith(str(ROOT / "operator"))
    )


def test_operator_folder_does_not_shadow_the_standard_library() -> None:
    assert hasattr(operator, "itemgetter")
    assert "site-packages" in operator.__file__ or "lib/python" in operator.__file__


def test_base_install_does_not_import_heavy_optional_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, twin.app, twin.cli, twin.models.mock; bad=[m for m in "
        "('langchain_core','statsmodels','kopf','opentelemetry.sdk') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
