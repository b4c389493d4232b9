"""Calibration of the statistical model from ``polaris.digitaltwin.calibrate`` events.

What we accept (``CalibrationRecord.predicted`` / ``.actual`` are the event's
``predicted_outcome`` / ``actual_outcome``):

1. **One metric** — ``predicted_outcome: {"metric": "average_response_time",
   "system": "swim", "value": 120}``, ``actual_outcome: {"value": 150}``. ``metric`` and
   ``system`` (alias ``source``) may sit in either object; ``value`` must be a number.
2. **A dict of metrics** — ``predicted_outcome: {"average_response_time": 120,
   "server_utilization": 0.7, "system": "swim"}``, ``actual_outcome:
   {"average_response_time": 150, "server_utilization": 0.8}``: every numeric key present
   in the actual outcome is a pair (names are normalised: ``_`` → ``.``, lower case).
3. **By simulation id** — ``prediction_id`` may be the ``simulation_id`` of a forecast or
   what-if this model returned (the last ``max_predictions`` are kept). Then the
   predicted values may be omitted: for each metric in ``actual_outcome`` the model's own
   prediction is looked up, at ``actual_outcome.timestamp`` (ISO-8601 or epoch seconds)
   if given, else at the last predicted state; the system comes from the simulation.

The correction is per (system, metric): a multiplicative factor, updated in log space
as an exponentially weighted mean of ``actual / raw_prediction`` (the first pairs are
averaged, later ones weighted ``min_weight``), where ``raw_prediction`` is the model's
uncorrected value (known for our own simulation ids; otherwise the payload's
prediction divided by the factor currently in force). A metric whose values are ever
<= 0 switches to an additive bias with the same weighting. Corrections apply to the
forecasts and what-if predictions of that metric (values and interval bounds).
Records that carry nothing usable are ignored and reported as such.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.core.events import normalise_name, parse_time
from twin.core.state import CalibrationRecord

MAX_PAIRS = 50
MIN_PAIRS_FOR_SLOPE = 4
UTIL_KEYS = ("server.utilization", "utilization")


def load_feature(util: float) -> float:
    """g(u) = u / (1 - u): how queueing delay scales with utilisation (capped at u = 0.99)."""
    u = min(max(util, 0.0), 0.99)
    return u / (1.0 - u)


RESERVED = {
    "metric",
    "system",
    "source",
    "value",
    "timestamp",
    "unit",
    "t",
    "time",
    "simulation_id",
    "prediction_id",
}


@dataclass(slots=True)
class Correction:
    log_factor: float = 0.0
    bias: float = 0.0
    additive: bool = False
    n: int = 0
    last_error_before: float = math.nan  # |actual - corrected prediction| of the last pair
    # (load feature g(u), log ratio) of recent pairs whose prediction carried a utilisation
    pairs: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_PAIRS))
    slope: float = 0.0  # d log factor / d g(u) around ``g_mean`` (0 = constant factor)
    g_mean: float = 0.0
    g_range: tuple[float, float] = (0.0, 0.0)

    @property
    def factor(self) -> float:
        return math.exp(self.log_factor)

    def log_factor_at(self, util: float | None) -> float:
        if util is None or self.slope == 0.0 or self.additive:
            return self.log_factor
        g = min(max(load_feature(util), self.g_range[0]), self.g_range[1])  # no extrapolation
        return self.log_factor + self.slope * (g - self.g_mean)

    def apply(self, raw: float, util: float | None = None) -> float:
        return raw + self.bias if self.additive else raw * math.exp(self.log_factor_at(util))

    def invert(self, corrected: float, util: float | None = None) -> float:
        return (
            corrected - self.bias
            if self.additive
            else corrected / math.exp(self.log_factor_at(util))
        )

    def refit_slope(self) -> None:
        """Weighted least squares of log ratio on g(u) over the recent pairs (recent weigh more)."""
        if len(self.pairs) < MIN_PAIRS_FOR_SLOPE:
            self.slope = 0.0
            return
        g = np.array([p[0] for p in self.pairs])
        r = np.array([p[1] for p in self.pairs])
        w = 0.9 ** np.arange(len(g))[::-1]
        gm = float(np.sum(w * g) / w.sum())
        rm = float(np.sum(w * r) / w.sum())
        var = float(np.sum(w * (g - gm) ** 2) / w.sum())
        if var < 1e-4:
            self.slope = 0.0
            return
        self.slope = float(np.sum(w * (g - gm) * (r - rm)) / w.sum()) / var
        self.g_mean = gm
        self.log_factor = rm  # the level at the mean load, consistent with the slope
        self.g_range = (float(g.min()), float(g.max()))


@dataclass(slots=True)
class StoredPrediction:
    system: str
    states: list[tuple[float, dict[str, float]]]  # raw (uncorrected) predictions


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Calibrator:
    def __init__(self, min_weight: float = 0.3, max_predictions: int = 1000) -> None:
        self.min_weight = min_weight
        self.max_predictions = max_predictions
        self.corrections: dict[tuple[str, str], Correction] = {}
        self.predictions: OrderedDict[str, StoredPrediction] = OrderedDict()
        self.records = 0
        self.pairs = 0
        self.ignored = 0

    # -- used by simulations ---------------------------------------------------

    def remember(
        self, prediction_id: str, system: str, states: list[tuple[float, dict[str, float]]]
    ) -> None:
        if not prediction_id:
            return
        self.predictions[prediction_id] = StoredPrediction(system, states)
        self.predictions.move_to_end(prediction_id)
        while len(self.predictions) > self.max_predictions:
            self.predictions.popitem(last=False)

    def correct(self, system: str, metric: str, value: float, util: float | None = None) -> float:
        """The calibrated value; ``util`` (the prediction's utilisation) selects the
        load-dependent factor when calibration pairs have shown one."""
        c = self.corrections.get((system, metric))
        return c.apply(value, util) if c is not None else value

    def has(self, system: str, metric: str) -> bool:
        return (system, metric) in self.corrections

    # -- used by calibrate -------------------------------------------------------

    def _pairs(
        self, rec: CalibrationRecord
    ) -> tuple[str, list[tuple[str, float | None, float, bool]], float | None]:
        """(system, [(metric, predicted, actual, predicted_is_raw)], predicted utilisation)."""
        pred, act = rec.predicted or {}, rec.actual or {}
        stored = self.predictions.get(rec.prediction_id)
        system = str(
            pred.get("system")
            or pred.get("source")
            or act.get("system")
            or act.get("source")
            or (stored.system if stored else "")
            or ""
        )
        out: list[tuple[str, float | None, float, bool]] = []
        util = next(
            (
                _num(pred.get(k))
                for k in ("server_utilization", "utilization", "server.utilization")
                if _num(pred.get(k)) is not None
            ),
            None,
        )
        metric = pred.get("metric") or act.get("metric")
        if metric:
            a = _num(act.get("value"))
            if a is not None:
                out.append((normalise_name(str(metric)), _num(pred.get("value")), a, False))
        else:
            for k, v in act.items():
                if k in RESERVED:
                    continue
                a = _num(v)
                if a is not None:
                    out.append((normalise_name(k), _num(pred.get(k)), a, False))
        if stored is not None and stored.states:
            when = None
            ts = act.get("timestamp") or pred.get("timestamp")
            if ts is not None:
                try:
                    when = parse_time(str(ts))
                except ValueError:
                    when = None
            state = stored.states[-1][1]
            if when is not None:
                state = min(stored.states, key=lambda s: abs(s[0] - when))[1]
            elif metric and len(stored.states) > 1:
                # One value for a whole simulation: compare with the mean of its states.
                keys = set.intersection(*(set(m) for _, m in stored.states))
                state = {k: float(np.mean([m[k] for _, m in stored.states])) for k in keys}
            util = next((state[k] for k in UTIL_KEYS if k in state), util)
            filled: list[tuple[str, float | None, float, bool]] = []
            for name, p, a, _ in out:
                if name in state:
                    filled.append((name, state[name], a, True))  # our own raw prediction
                else:
                    filled.append((name, p, a, False))
            out = filled
        return system, out, util

    def observe(self, rec: CalibrationRecord) -> dict[str, float]:
        """Updates the corrections from one record; returns the new factors/biases."""
        self.records += 1
        system, pairs, util = self._pairs(rec)
        changed: dict[str, float] = {}
        for metric, predicted, actual, is_raw in pairs:
            if predicted is None:
                continue
            key = (system, metric)
            c = self.corrections.get(key)
            if c is None:
                c = self.corrections[key] = Correction()
            raw = predicted if is_raw else c.invert(predicted, util)
            c.last_error_before = abs(actual - c.apply(raw, util))
            c.n += 1
            w = max(1.0 / c.n, self.min_weight)
            if not c.additive and (raw <= 0 or actual <= 0):
                c.additive = True
                c.bias = (c.factor - 1.0) * raw
                c.log_factor = 0.0
                c.slope = 0.0
            if c.additive:
                c.bias += w * ((actual - raw) - c.bias)
                changed[f"{system}/{metric}.bias"] = c.bias
            else:
                lr = math.log(actual / raw)
                if util is not None:
                    c.pairs.append((load_feature(util), lr))
                c.log_factor += w * (lr - c.log_factor)
                c.refit_slope()
                changed[f"{system}/{metric}.factor"] = c.factor
                if c.slope:
                    changed[f"{system}/{metric}.factor_slope"] = c.slope
            self.pairs += 1
        if not changed:
            self.ignored += 1
        return changed

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            f"{s}/{m}": ({"bias": c.bias} if c.additive else {"factor": c.factor})
            | {"pairs": float(c.n)}
            for (s, m), c in self.corrections.items()
        }

    def reset(self) -> None:
        self.corrections.clear()
        self.predictions.clear()
        self.records = self.pairs = self.ignored = 0
