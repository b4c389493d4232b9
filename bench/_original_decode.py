"""The original twin's decode path, rebuilt as the batch-ingestion baseline.

Per message ``json.loads``; per event one pydantic v2 ``TelemetryEvent`` (name
validator that checks the pattern and normalises the name — lower case, ``_`` →
``.`` —, a datetime timestamp, free-form tags/metadata) and, as the original did
(see the wire contract), the ``KnowledgeEvent`` envelope wrapping it (uuid4
event id, timestamp, source, event type, ``data`` = the event as a dict).
``wrap=False`` gives the bare decode. Written for this benchmark: the same work
per event as the original, not its code.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")


class OriginalTelemetryEvent(BaseModel):
    name: str
    value: float | int | str | bool
    unit: str = "unknown"
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = "unknown"
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"invalid metric name {v!r}")
        return v.lower().replace("_", ".")


class OriginalKnowledgeEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


def decode_batch(payload: bytes, wrap: bool = True) -> list[Any]:
    data = json.loads(payload)
    items = data if isinstance(data, list) else data.get("events", [])
    out: list[Any] = []
    for raw in items:
        try:
            ev = OriginalTelemetryEvent(**raw)
        except Exception:  # noqa: BLE001, S112 - the original logged and skipped bad events
            continue
        if wrap:
            out.append(
                OriginalKnowledgeEvent(
                    timestamp=ev.timestamp,
                    source=ev.source,
                    event_type="telemetry",
                    data=ev.model_dump(),
                )
            )
        else:
            out.append(ev)
    return out
