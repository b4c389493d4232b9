"""World-model registry: built-ins and third-party models via the entry-point
group ``polaris.world_models`` (``name = "package.module:Class"``), plus explicit
``register_model`` for tests and embedding. Entry points load lazily so the base
install never imports LangChain or statsmodels unless that model is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from twin.core.errors import ModelNotFound, ModelUnavailable
from twin.core.state import TwinState
from twin.models.base import WorldModel

ENTRY_POINT_GROUP = "polaris.world_models"

_BUILTIN: dict[str, str] = {
    "mock": "twin.models.mock:MockWorldModel",
    "statistical": "twin.models.statistical.model:StatisticalWorldModel",
    "gemini": "twin.models.llm.gemini:GeminiWorldModel",
    "hybrid": "twin.models.hybrid:HybridWorldModel",
}
_EXTRA = {"statistical": "statistical", "gemini": "llm", "hybrid": "statistical,llm"}
_registered: dict[str, type[WorldModel]] = {}


def register_model(name: str, cls: type[WorldModel]) -> None:
    """Registers (or replaces) a model class under ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, WorldModel)):
        raise TypeError(f"{cls!r} is not a WorldModel subclass")
    _registered[name] = cls


def _targets() -> dict[str, str]:
    targets = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def available_models() -> list[str]:
    return sorted(set(_targets()) | set(_registered))


def model_class(name: str) -> type[WorldModel]:
    if name in _registered:
        return _registered[name]
    target = _targets().get(name)
    if target is None:
        raise ModelNotFound(
            f"unknown world model {name!r}; available: {', '.join(available_models())}"
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except ImportError as exc:
        raise ModelUnavailable(
            f"world model {name!r} needs optional dependencies that are not installed ({exc}); "
            f"install polaris-digital-twin[{_EXTRA.get(name, 'all')}]"
        ) from exc
    return cls


def create_model(
    name: str, state: TwinState, settings: Mapping[str, Any] | None = None
) -> WorldModel:
    return model_class(name)(state, settings or {})
