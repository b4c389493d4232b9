"""Coverage of forecast intervals, measured out of sample through the serving code.

``forecast_interval_coverage`` replays series into a statistical world model and its
prediction ledger exactly as a running twin sees them: points are ingested in order,
the model's background fitter runs between requests (same due rules as when
serving), and every ``every_steps`` points a ``Simulate(forecast)`` of
``horizon_steps`` is answered, its intervals recalibrated and recorded by the same
``calibrate_and_record`` the runtime uses, and scored once the replay has passed its
horizon. Nothing a prediction is judged on was seen when it was made, and the interval
scale applied to a prediction was learned only from predictions scored before it.

Figures: the coverage of the intervals as the model gave them (``raw``) and as
delivered after recalibration (``calibrated``), over the predictions of the second half
of each series' origins (``held_out``; the first half is where the ledger starts
learning), and over all of them. Use it on any telemetry, e.g. an exemplar simulator's:

    from twin.evaluation.coverage import forecast_interval_coverage
    rep = forecast_interval_coverage({"swim/arrival.rate": (t, y), ...}, level=0.9)
    print(rep.held_out.raw, rep.held_out.calibrated)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.core.events import Point
from twin.core.ledger import PredictionLedger
from twin.core.state import TwinState

# Refits as when serving, except the 6 h event-time age rule (on 5-minute data that is a
# refit every 72 points; a replay of a month would spend its time fitting).
DEFAULT_SETTINGS: dict[str, Any] = {"background_fitting": False, "refit_interval_sec": 0}


@dataclass(slots=True)
class Coverage:
    raw: float = math.nan
    calibrated: float = math.nan
    points: int = 0
    predictions: int = 0
    mase: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return {
            "raw": self.raw,
            "calibrated": self.calibrated,
            "points": self.points,
            "predictions": self.predictions,
            "mase": self.mase,
        }


@dataclass(slots=True)
class CoverageReport:
    level: float
    held_out: Coverage
    overall: Coverage
    per_series: dict[str, Coverage] = field(default_factory=dict)

    # The names announced to other helpers: rep.raw / rep.calibrated are the held-out figures.
    @property
    def raw(self) -> float:
        return self.held_out.raw

    @property
    def calibrated(self) -> float:
        return self.held_out.calibrated

    @property
    def n_points(self) -> int:
        return self.held_out.points

    @property
    def n_predictions(self) -> int:
        return self.held_out.predictions


def _combine(rows: list[dict[str, Any]]) -> Coverage:
    pts = ins = ins_raw = 0
    mases = []
    for r in rows:
        o = r.get("outcome") or {}
        n = int(o.get("points") or 0)
        if not n or o.get("coverage") is None:
            continue
        pts += n
        ins += round(float(o["coverage"]) * n)
        ins_raw += round(float(o["coverage_raw"]) * n)
        if o.get("mase") is not None:
            mases.append(float(o["mase"]))
    if not pts:
        return Coverage()
    return Coverage(
        ins_raw / pts, ins / pts, pts, len(rows), float(np.mean(mases)) if mases else math.nan
    )


async def _replay(
    name: str,
    t: np.ndarray,
    y: np.ndarray,
    level: float,
    horizon_steps: int,
    every_steps: int,
    start_fraction: float,
    settings: Mapping[str, Any],
    ledger: PredictionLedger,
) -> list[dict[str, Any]]:
    from twin.models.domain import EventBatch, SimulationRequest
    from twin.models.predictions import calibrate_and_record
    from twin.models.statistical.model import StatisticalWorldModel

    system, metric = name.rsplit("/", 1) if "/" in name else (name, "value")
    state = TwinState()
    model = StatisticalWorldModel(state, {**DEFAULT_SETTINGS, **settings, "interval_level": level})
    await model.initialize()
    order = np.argsort(t, kind="stable")
    t, y = np.asarray(t, float)[order], np.asarray(y, float)[order]
    n = t.shape[0]
    step = float(np.median(np.diff(t))) if n > 1 else 60.0
    horizon_min = max(1, math.ceil(horizon_steps * step / 60.0))
    first = max(int(n * start_fraction), 2 * horizon_steps, 50)
    ids: list[str] = []
    pos = 0
    k = 0
    try:
        for cut in range(first, n - horizon_steps + 1, every_steps):
            pts = [
                Point(system, metric, float(a), float(b), "unknown", None)
                for a, b in zip(t[pos:cut].tolist(), y[pos:cut].tolist())
            ]
            state.apply_points(pts)
            model.update(EventBatch(pts))
            pos = cut
            ledger.score_due(state.store, state.actions)
            await model.fit_cycle(max_fits=10)
            req = SimulationRequest(
                f"{name}#{k}", "forecast", [], horizon_min, {"system": system, "metric": metric}
            )
            res = await model.simulate(req)
            if res.success:
                bt = getattr(model, "backtest_error", None)
                calibrate_and_record(ledger, state.store, req, res, model.name, bt)
                ids.append(req.simulation_id)
            k += 1
        rest = [
            Point(system, metric, float(a), float(b), "unknown", None)
            for a, b in zip(t[pos:].tolist(), y[pos:].tolist())
        ]
        state.apply_points(rest)
        ledger.score_due(state.store, state.actions)
    finally:
        await model.shutdown()
    by_id = {r["id"]: r for r in ledger.report(system=system, kind="forecast", limit=10**9)}
    return [by_id[i] for i in ids if i in by_id and by_id[i]["status"] == "scored"]


def forecast_interval_coverage(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    level: float = 0.9,
    horizon_steps: int = 60,
    every_steps: int = 30,
    start_fraction: float = 0.3,
    settings: Mapping[str, Any] | None = None,
    calibrate: bool = True,
) -> CoverageReport:
    """Coverage of ``level`` forecast intervals, before and after recalibration (see module doc).

    ``series`` maps ``"system/metric"`` (or any name) to ``(t, y)``: event times in epoch
    seconds and values. Forecast origins start at ``start_fraction`` of each series.
    """
    per: dict[str, Coverage] = {}
    held: list[dict[str, Any]] = []
    every: list[dict[str, Any]] = []
    for name, (t, y) in series.items():
        ledger = PredictionLedger(
            max_pending=10_000, max_recent=10_000, calibrate_intervals=calibrate
        )
        rows = asyncio.run(
            _replay(
                name,
                np.asarray(t),
                np.asarray(y),
                level,
                horizon_steps,
                every_steps,
                start_fraction,
                settings or {},
                ledger,
            )
        )
        second = rows[len(rows) // 2 :]
        per[name] = _combine(second)
        held += second
        every += rows
    return CoverageReport(level, _combine(held), _combine(every), per)
