"""What the twin accepts at its edges, as one value: event time window, lengths of
names, units, text values and tags, depth and size of action payloads.

Validated once, at the edge (the decoders for NATS, the request mapping for gRPC),
so nothing stored can make a later answer fail: every accepted time formats as an
ISO date, every stored string fits in an answer. Each limit is a setting under
``digital_twin.limits`` (see docs/configuration.md).

The event-time window is relative to the *receive* time of the message: from
``min_event_time`` (default 1970-01-01) to ``max_event_time_ahead_sec`` (default one
day) after it was received. On a JetStream replay the receive time is later than it
was live, so the window only widens: every event accepted live is accepted again on
replay, and replays of old data sets (NAB's 2013-2015 series) pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from twin.core.errors import InvalidRequest

DAY = 86_400.0
# datetime's own range ends at year 9999; keeping every accepted time below it means
# every accepted time can be formatted, whatever the window settings say.
MAX_REPRESENTABLE = 253_402_300_799.0  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Bounds on everything a message may bring in; the defaults are the schema's."""

    min_event_time: float = 0.0
    max_event_time_ahead_sec: float = DAY
    max_name_length: int = 256
    max_source_length: int = 256
    max_unit_length: int = 64
    max_text_length: int = 1024
    max_tags: int = 32
    max_tag_length: int = 256
    max_payload_depth: int = 32
    max_action_payload_bytes: int = 65_536
    # Requests (issue 17, defect 4): what one RPC may ask for.
    max_request_parameters: int = 64
    max_parameter_length: int = 65_536
    max_query_metrics: int = 100
    max_scanned_samples: int = 5_000_000
    max_points_returned: int = 50_000

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> EventLimits:
        """From the ``limits`` config section (unknown keys are the schema's business)."""
        if not settings:
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names})

    def window(self, now: float) -> tuple[float, float]:
        """Accepted event times for a message received at ``now`` (epoch seconds; the
        wall clock when it is later, so a simulated clock never narrows the window)."""
        now = max(now, time.time())
        return self.min_event_time, min(now + self.max_event_time_ahead_sec, MAX_REPRESENTABLE)

    def accepts_time(self, t: float, now: float) -> bool:
        lo, hi = self.window(now)
        return lo <= t <= hi

    def time_reason(self, t: float, now: float) -> str:
        """The dead-letter reason for an event time outside the window."""
        lo, hi = self.window(now)
        return (
            f"timestamp {t!r} is outside the accepted window [{lo:g}, {hi:.0f}] "
            f"(limits.min_event_time .. receive time + limits.max_event_time_ahead_sec)"
        )

    def check_request_time(self, t: float, field: str, now: float | None = None) -> float:
        """A request time (Query.timestamp, historical ``at``, ...) or ``InvalidRequest``."""
        now = time.time() if now is None else now
        if not math.isfinite(t) or not self.accepts_time(t, now):
            lo, hi = self.window(now)
            raise InvalidRequest(
                f"time {t!r} is outside the accepted window [{lo:g}, {hi:.0f}] (epoch seconds)",
                field,
            )
        return t


    def check_parameters(self, params: Mapping[str, str], field: str = "parameters") -> None:
        """A request's parameters map: bounded in entries and in each key and value."""
        if len(params) > self.max_request_parameters:
            raise InvalidRequest(
                f"{len(params)} entries; at most {self.max_request_parameters} "
                "(limits.max_request_parameters)",
                field,
            )
        for key, value in params.items():
            if len(key) > self.max_parameter_length or len(value) > self.max_parameter_length:
                raise InvalidRequest(
                    f"longer than {self.max_parameter_length} characters "
                    "(limits.max_parameter_length)",
                    f"{field}.{key[:64]}",
                )


DEFAULT_LIMITS = EventLimits()


def payload_depth_exceeds(obj: Any, limit: int, start: int = 1) -> bool:
    """True when dicts/lists in ``obj`` nest deeper than ``limit`` (iterative: no recursion)."""
    stack = [(obj, start)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            if d > limit:
                return True
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            if d > limit:
                return True
            stack.extend((v, d + 1) for v in o)
    return False
