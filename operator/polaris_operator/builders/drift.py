"""Drift: does a live object still say what the desired one says?

The API server adds defaults (``terminationMessagePath``, probe fields, ...) and
canonicalises quantities, so live objects are compared as supersets of the desired ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["first_difference", "is_subset"]


def is_subset(desired: Any, live: Any) -> bool:
    """Whether ``live`` still has everything ``desired`` says.

    The API server adds defaults (``terminationMessagePath``, probe fields, ...), so
    live objects are compared as supersets of the desired ones. Lists must have the
    same length (an added container or env var is drift), and their items are compared
    pairwise the same way.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, have) for d, have in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if desired == live:
        return True
    # Quantities come back canonicalised ("0.5" -> "500m", "1024Mi" -> "1Gi").
    a, b = _quantity(desired), _quantity(live)
    return a is not None and a == b


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """Path of the first place where ``live`` lacks what ``desired`` says (None if subset)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "<root>"
        for k, v in desired.items():
            here = f"{path}.{k}" if path else str(k)
            if k not in live:
                return here
            found = first_difference(v, live[k], here)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return path
        for i, (d, have) in enumerate(zip(desired, live, strict=True)):
            found = first_difference(d, have, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if is_subset(desired, live) else path


_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]{0,2})$")


def _quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number, or None when it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY_RE.match(value)
    if not m or m.group(2) not in _SUFFIXES:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIXES[m.group(2)]
    except InvalidOperation:
        return None
