"""``Point``: one decoded telemetry sample, the unit of the ingestion hot path.

A module of its own because both the decoders (``events``) and the columnar batches
(``columns``) build it, and ``events`` also builds columns.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Point"]


class Point(NamedTuple):
    """One decoded telemetry sample, the unit of the ingestion hot path."""

    source: str
    name: str
    t: float
    value: float
    unit: str
    text: str | None
