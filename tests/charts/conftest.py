"""Chart tests cross-check the chart against the operator's own builders: make the operator
test helpers (crd_tools, polaris_operator from the tree) importable here too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_polaris_operator_test_setup",
    Path(__file__).resolve().parents[1] / "operator" / "conftest.py",
)
assert _spec and _spec.loader
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))
