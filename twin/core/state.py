"""The twin's facts in one place: the series store plus the logs of execution
results and calibrations. Ingestion applies decoded events here; world models
read from it. Nothing here knows about NATS or gRPC.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twin.core.events import CalibrationEvent, ExecutionResult, Point, to_epoch
from twin.core.notify import EventBus
from twin.core.store import Retention, SeriesStore


@dataclass(slots=True)
class ActionRecord:
    """An execution result as the models see it (event time in epoch seconds)."""

    t: float
    action_id: str
    action_type: str
    target: str
    status: str
    success: bool | None
    duration_sec: float | None
    message: str
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CalibrationRecord:
    t: float
    calibration_id: str
    prediction_id: str
    predicted: dict[str, Any]
    actual: dict[str, Any]
    accuracy: dict[str, Any]


class TwinState:
    """Store + action log + calibration log, with counters of what was applied."""

    def __init__(self, retention: Retention | None = None, action_log_size: int = 10_000) -> None:
        self.store = SeriesStore(retention)
        self.actions: deque[ActionRecord] = deque(maxlen=action_log_size)
        self.calibrations: deque[CalibrationRecord] = deque(maxlen=action_log_size)
        self.points_applied = 0
        self.text_values = 0
        # Pushed events (anomaly start/clear, health, drift, ...): producers publish
        # here on transitions; Watch, SSE and NATS subscribe (twin.core.notify).
        self.events = EventBus()

    def apply_points(self, points: Iterable[Point]) -> int:
        """Appends decoded points; string values become the series' latest text."""
        # The ingestion hot path: SeriesStore.append inlined (one dict lookup and
        # one Series.append per point, tuple unpacking instead of attribute access).
        store = self.store
        get = store._series.get
        n = appended = 0
        try:
            for source, name, t, value, unit, text in points:
                if text is None:
                    s = get((source, name))
                    if s is None:
                        s = store.series(source, name, unit)
                    s.append(t, value)
                    appended += 1
                else:
                    store.series(source, name, unit).last_text = text
                    self.text_values += 1
                n += 1
        finally:
            store.samples_appended += appended  # counted per append, as SeriesStore.append does
        self.points_applied += n
        return n

    def apply_execution(self, res: ExecutionResult, now: float) -> ActionRecord:
        t = to_epoch(res.finished_at, math.nan)
        if math.isnan(t):
            t = to_epoch(res.started_at, now)
        target = res.target or str((res.metadata or {}).get("target") or (res.output or {}).get("target") or "")
        success = res.success if res.success is not None else (res.status == "success" if res.status in ("success", "failed", "timeout", "cancelled") else None)
        rec = ActionRecord(t, res.action_id, res.action_type.upper(), target, res.status, success, res.duration_sec, res.message, dict(res.output or {}))
        self.actions.append(rec)
        return rec

    def apply_calibration(self, cal: CalibrationEvent, now: float) -> CalibrationRecord:
        rec = CalibrationRecord(
            to_epoch(cal.timestamp, now),
            cal.calibration_id or "",
            cal.prediction_id,
            dict(cal.predicted_outcome),
            dict(cal.actual_outcome),
            dict(cal.accuracy_metrics or {}),
        )
        self.calibrations.append(rec)
        return rec

    def reset(self) -> dict[str, int]:
        dropped = {
            "samples": self.store.reset(),
            "actions": len(self.actions),
            "calibrations": len(self.calibrations),
        }
        self.actions.clear()
        self.calibrations.clear()
        return dropped
