"""The DigitalTwin CRD as the API server applies it before the operator sees an object.

The CRD ships inside the package (``polaris_operator/crds/``, identical to ``crds/`` and the
chart's copy) so that ``render`` can default a DigitalTwin file exactly as the API server
would: structural defaults, top-down, also inside defaults. Validation proper (OpenAPI and
CEL rules) stays the API server's; what the operator itself refuses is a ``SpecError``.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["apply_defaults", "crd", "schema"]


@lru_cache(maxsize=1)
def crd() -> dict[str, Any]:
    text = resources.files("polaris_operator").joinpath("crds/digitaltwins.polaris.io.yaml")
    return dict(yaml.safe_load(text.read_text()))


def schema() -> dict[str, Any]:
    """The storage version's openAPIV3Schema."""
    (version,) = [v for v in crd()["spec"]["versions"] if v["storage"]]
    return dict(version["schema"]["openAPIV3Schema"])


def apply_defaults(value: Any, node: dict[str, Any] | None = None) -> Any:
    """A copy of ``value`` with the schema's defaults filled in (structural defaulting)."""
    node = schema() if node is None else node
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, sub in props.items():
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if key not in props:
                    value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(v, node["items"]) for v in value]
    return value
