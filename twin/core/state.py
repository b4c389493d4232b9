"""The twin's facts in one place: the series store plus the logs of execution
results and calibrations. Ingestion applies decoded events here; world models
read from it. Nothing here knows about NATS or gRPC.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from twin.core.columns import SeriesColumns
from twin.core.events import CalibrationEvent, ExecutionResult, Point, to_epoch
from twin.core.ledger import PredictionLedger
from twin.core.limits import DEFAULT_LIMITS, EventLimits
from twin.core.notify import EventBus
from twin.core.store import Retention, Series, SeriesStore

_R = TypeVar("_R")
RECORD_OVERHEAD = 256  # bytes a record costs beyond its payload (objects, dicts)


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
    # The action's parameters, from ``metadata.params`` (or ``.parameters``, or
    # ``output.params``): what learned effects are keyed by.
    params: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CalibrationRecord:
    t: float
    calibration_id: str
    prediction_id: str
    predicted: dict[str, Any]
    actual: dict[str, Any]
    accuracy: dict[str, Any]


def _action_params(res: ExecutionResult) -> dict[str, str]:
    for holder in (res.metadata or {}, res.output or {}):
        for key in ("params", "parameters"):
            p = holder.get(key)
            if isinstance(p, dict):
                return {str(k): str(v) for k, v in list(p.items())[:32]}
    return {}


class BoundedLog(deque, Generic[_R]):  # type: ignore[type-arg]
    """A deque of records bounded in count *and* in bytes (oldest dropped first).

    ``size_of`` estimates a record's bytes once, when it is appended; ``nbytes`` is
    the running total. Only ``append`` and ``clear`` mutate it (as the twin does).
    """

    def __init__(self, max_items: int, max_bytes: int, size_of: Callable[[Any], int]) -> None:
        super().__init__()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._sizes: deque[int] = deque()
        self.nbytes = 0
        self.dropped = 0

    def append(self, rec: _R) -> None:
        n = self._size_of(rec)
        super().append(rec)
        self._sizes.append(n)
        self.nbytes += n
        while len(self) > self.max_items or (self.nbytes > self.max_bytes and len(self) > 1):
            super().popleft()
            self.nbytes -= self._sizes.popleft()
            self.dropped += 1

    def clear(self) -> None:
        super().clear()
        self._sizes.clear()
        self.nbytes = 0


def _record_size(*parts: Any) -> int:
    """Bytes of a record's variable parts, as JSON (what a snapshot will hold)."""
    try:
        return RECORD_OVERHEAD + sum(len(msgspec.json.encode(p)) for p in parts)
    except (TypeError, ValueError, OverflowError):
        return RECORD_OVERHEAD + sum(len(repr(p)) for p in parts)


def _action_size(rec: ActionRecord) -> int:
    return _record_size(
        rec.action_id, rec.action_type, rec.target, rec.status, rec.message, rec.output, rec.params
    )


def _calibration_size(rec: CalibrationRecord) -> int:
    return _record_size(
        rec.calibration_id, rec.prediction_id, rec.predicted, rec.actual, rec.accuracy
    )


class TwinState:
    """Store + action log + calibration log, with counters of what was applied."""

    def __init__(
        self,
        retention: Retention | None = None,
        action_log_size: int = 10_000,
        *,
        max_series: int | None = None,
        max_series_per_system: int | None = None,
        action_log_max_bytes: int = 64 * 1024 * 1024,
        limits: EventLimits = DEFAULT_LIMITS,
        ledger: PredictionLedger | None = None,
    ) -> None:
        self.store = SeriesStore(retention, max_series, max_series_per_system)
        # Predictions and their outcomes are facts too: recorded by the runtime, scored
        # against this store, kept in snapshots (twin/core/ledger.py).
        self.ledger = ledger if ledger is not None else PredictionLedger()
        self.actions: BoundedLog[ActionRecord] = BoundedLog(
            action_log_size, action_log_max_bytes, _action_size
        )
        self.calibrations: BoundedLog[CalibrationRecord] = BoundedLog(
            action_log_size, action_log_max_bytes, _calibration_size
        )
        self.limits = limits  # what ingestion accepts; request times are checked against it too
        self.points_applied = 0
        self.text_values = 0
        # Pushed events (anomaly start/clear, health, drift, ...): producers publish
        # here on transitions; Watch, SSE and NATS subscribe (twin.core.notify).
        self.events = EventBus()

    def apply_points(self, points: Iterable[Point]) -> int:
        """Appends decoded points; string values become the series' latest text.

        Points of new series over the store's caps are skipped; ``apply`` says which.
        """
        return self.apply(points)[0]

    def apply(self, points: Iterable[Point]) -> tuple[int, list[tuple[Point, str]]]:
        """Appends decoded points: (points applied, [(refused point, reason)]).

        A point is refused only when it would create a series beyond a cap
        (``state.max_series``, ``state.max_series_per_system``); the caller
        dead-letters it and keeps it from the model.
        """
        # The ingestion hot path: SeriesStore.append inlined (one dict lookup and
        # one Series.append per point, tuple unpacking instead of attribute access).
        store = self.store
        get = store._series.get
        n = appended = 0
        refused: list[tuple[Point, str]] = []
        try:
            for p in points:
                source, name, t, value, unit, text = p
                s = get((source, name))
                if s is None:
                    admitted = store.admit(source, name, unit)
                    if isinstance(admitted, str):  # the refusal's reason
                        refused.append((p, admitted))
                        continue
                    s = admitted
                if text is None:
                    s.append(t, value)
                    appended += 1
                else:
                    s.last_text = text
                    self.text_values += 1
                n += 1
        finally:
            store.samples_appended += appended  # counted per append, as SeriesStore.append does
        self.points_applied += n
        return n, refused

    def apply_columns(self, cols: SeriesColumns) -> tuple[int, dict[int, str]]:
        """The columnar ``apply``: one vectorised append per series.

        Returns (points applied, {group: reason} of groups refused by a series cap).
        """
        store = self.store
        get = store._series.get
        n = appended = 0
        refused: dict[int, str] = {}
        series: list[Series | None] = []
        try:
            for g, key in enumerate(cols.keys):
                s = get(key)
                if s is None:
                    got = store.admit(key[0], key[1], cols.units[g])
                    if isinstance(got, str):
                        refused[g] = got
                        store.rejected_events += (
                            len(cols.ts[g]) + sum(1 for x in cols.texts if x[0] == g) - 1
                        )
                        series.append(None)
                        continue
                    s = got
                series.append(s)
                t = cols.ts[g]
                k = len(t)
                if k:
                    s.extend(t, cols.vs[g])
                    appended += k
            for g, _, text in cols.texts:
                s = series[g]
                if s is not None:
                    s.last_text = text
                    self.text_values += 1
                    n += 1
        finally:
            store.samples_appended += appended
        n += appended
        self.points_applied += n
        return n, refused

    def apply_execution(self, res: ExecutionResult, now: float) -> ActionRecord:
        t = to_epoch(res.finished_at, math.nan)
        if math.isnan(t):
            t = to_epoch(res.started_at, now)
        target = res.target or str(
            (res.metadata or {}).get("target") or (res.output or {}).get("target") or ""
        )
        success = (
            res.success
            if res.success is not None
            else (
                res.status == "success"
                if res.status in ("success", "failed", "timeout", "cancelled")
                else None
            )
        )
        rec = ActionRecord(
            t,
            res.action_id,
            res.action_type.upper(),
            target,
            res.status,
            success,
            res.duration_sec,
            res.message,
            dict(res.output or {}),
            _action_params(res),
        )
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
            "predictions": int(self.ledger.totals()["predictions_recorded_total"]),
        }
        self.actions.clear()
        self.calibrations.clear()
        self.ledger.reset()
        return dropped
