"""Shared fixtures of the operator tests.

``polaris_operator`` is the installed name of the ``operator/`` folder. When the project
is not installed (a fresh checkout), register the folder under that name so the tests
import exactly the code in the tree.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Helpers beside the tests, importable in pytest's prepend and importlib modes alike:
# crd_tools (offline API-server admission), kube_emulator (kmock + API-server behaviour)
# and the chart's rendering helpers (test_helm_chart).
for _helpers in (ROOT / "tests" / "crds", ROOT / "tests" / "operator", ROOT / "tests" / "charts"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


def _ensure_polaris_operator() -> None:
    try:
        import polaris_operator  # noqa: F401

        return
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "polaris_operator",
        ROOT / "operator" / "polaris_operator" / "__init__.py",
        submodule_search_locations=[str(ROOT / "operator" / "polaris_operator")],
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["polaris_operator"] = module
    spec.loader.exec_module(module)


if str(ROOT) not in sys.path:
    # The twin package (shared config schema) when not installed. Appended, never
    # prepended: the tree's operator/ folder must not shadow the stdlib `operator`.
    sys.path.append(str(ROOT))
_ensure_polaris_operator()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Any]:
    """A nats-server process for pod-bridge tests (pod_bridge.NatsProcess)."""
    from pod_bridge import NatsProcess

    server = NatsProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
