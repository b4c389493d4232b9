"""One typed parser for world-model settings.

A model declares its settings as a frozen dataclass whose fields carry the types and
the defaults (the one place a default lives); ``parse_settings`` builds it from the
free-form ``world_model.settings`` mapping. Keys the dataclass does not declare are
left alone (they belong to another part of the model, or to a hybrid's members); a
value of the wrong type raises ``ValueError`` naming ``settings.<key>``, which
``validate_settings`` reports before start.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["parse_settings", "settings_problems"]

T = TypeVar("T")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(kind: Any, value: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if kind in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"not a number: {value!r}")
            return kind(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r} ({exc})") from exc
    return value


def parse_settings(cls: type[T], raw: Mapping[str, Any] | None, *, prefix: str = "settings") -> T:
    """A ``cls`` from ``raw``: declared keys coerced to their field type, None = default."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"{prefix}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or raw is None or f.name not in raw or raw[f.name] is None:
            continue
        values[f.name] = _coerce(hints.get(f.name), raw[f.name], f"{prefix}.{f.name}")
    return cls(**values)


def settings_problems(
    cls: type[Any], raw: Mapping[str, Any] | None, prefix: str = "settings"
) -> list[str]:
    """``parse_settings`` as a list of problems (empty when the settings parse)."""
    try:
        parse_settings(cls, raw, prefix=prefix)
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    return []
