"""SLOs and the utility that ranks plans.

Every figure comes from, in order: the request's ``parameters``, then
``settings.systems.<name>`` (``slo: {...}``, ``utility: {...}``), then top-level
``settings.slo`` / ``settings.utility``, then these defaults:

=============================  ==========  ==================================================
key                            default     meaning
=============================  ==========  ==================================================
``slo.latency_ms``             1000        latency objective (ms)
``slo.latency_stat``           tail/mean   ``tail`` (a published p95, if any) or ``mean``
``slo.error_rate``             none        error-ratio objective (0..1)
``slo.window_sec``             60          the SLO is judged on windows of this length
``utility.value_per_request``  0.0001      value of a request served within the SLO
``utility.quality_weight``     0.5         extra value per unit of quality (dimmer share or
                                           the quality metric, e.g. accuracy)
``utility.breach_penalty``     1.0         a request served in breach costs this many values
``utility.cost_per_unit_hour`` 0.5         cost of a capacity unit (server, replica) per hour
                                           (also ``settings.cost_per_server_hour``)
``utility.currency``           USD
=============================  ==========  ==================================================

Per state (lasting ``dt`` seconds): ``good = offered load · (1 - error_rate)``;
``value = good · v · ((1 + w·q)·(1 - p) - penalty·p)``; ``cost = units · cost/h · dt/3600``,
with ``p`` the probability that the state breaches the SLO. ``utility = Σ (value - cost)``
over the horizon, in the currency. ``p`` is ``P(latency > SLO)`` under a log-normal
around the predicted latency whose spread combines the prediction's interval and the
model's own error, together with ``P(error rate > SLO)`` when that objective is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from twin.core.errors import InvalidRequest

DEFAULTS: dict[str, Any] = {
    "slo.latency_ms": 1000.0,
    "slo.latency_stat": None,
    "slo.error_rate": None,
    "slo.window_sec": 60.0,
    "utility.value_per_request": 1e-4,
    "utility.quality_weight": 0.5,
    "utility.breach_penalty": 1.0,
    "utility.cost_per_unit_hour": 0.5,
    "utility.currency": "USD",
}


@dataclass(frozen=True, slots=True)
class Objectives:
    latency_ms: float
    latency_stat: str  # "mean" or "tail"
    error_rate: float | None
    window_sec: float
    value_per_request: float
    quality_weight: float
    breach_penalty: float
    cost_per_unit_hour: float
    currency: str
    sources: tuple[str, ...] = ()

    def describe(self) -> str:
        err = f", error rate <= {self.error_rate:g}" if self.error_rate is not None else ""
        return (
            f"SLO {self.latency_stat} latency <= {self.latency_ms:g} ms{err}; utility = "
            f"served·{self.value_per_request:g}"
            f"·(1 + {self.quality_weight:g}·quality) in SLO, -{self.breach_penalty:g}× in breach, "
            f"- {self.cost_per_unit_hour:g} {self.currency}/unit-hour"
        )


def _flat(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return {k: v for k, v in out.items() if k.startswith(prefix)}


def objectives(
    params: Mapping[str, str],
    system_settings: Mapping[str, Any],
    settings: Mapping[str, Any],
    has_tail: bool,
) -> Objectives:
    layers = [
        ("request", {k: v for k, v in params.items() if k.startswith(("slo.", "utility."))}),
        (
            "system settings",
            _flat(
                {
                    k: system_settings[k]
                    for k in ("slo", "utility")
                    if isinstance(system_settings.get(k), Mapping)
                },
                "",
            ),
        ),
        (
            "settings",
            _flat(
                {
                    k: settings[k]
                    for k in ("slo", "utility")
                    if isinstance(settings.get(k), Mapping)
                },
                "",
            ),
        ),
    ]
    legacy = settings.get("cost_per_server_hour")
    found: dict[str, Any] = {}
    used: list[str] = []
    for key, default in DEFAULTS.items():
        for name, layer in layers:
            if key in layer and layer[key] not in (None, ""):
                found[key] = layer[key]
                used.append(f"{key} from {name}")
                break
        else:
            found[key] = (
                legacy if (key == "utility.cost_per_unit_hour" and legacy is not None) else default
            )

    def num(key: str, lo: float = 0.0) -> float:
        try:
            v = float(found[key])
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"not a number: {found[key]!r}", f"parameters.{key}") from exc
        if not math.isfinite(v) or v < lo:
            raise InvalidRequest(f"must be a finite number >= {lo:g}", f"parameters.{key}")
        return v

    stat = found["slo.latency_stat"] or ("tail" if has_tail else "mean")
    if stat not in ("mean", "tail"):
        raise InvalidRequest("must be 'mean' or 'tail'", "parameters.slo.latency_stat")
    err = None if found["slo.error_rate"] in (None, "") else num("slo.error_rate")
    latency = num("slo.latency_ms")
    if latency <= 0:
        raise InvalidRequest("must be > 0", "parameters.slo.latency_ms")
    return Objectives(
        latency,
        stat if (stat == "mean" or has_tail) else "mean",
        err,
        max(1.0, num("slo.window_sec")),
        num("utility.value_per_request"),
        num("utility.quality_weight"),
        num("utility.breach_penalty"),
        num("utility.cost_per_unit_hour"),
        str(found["utility.currency"]),
        tuple(used),
    )


def p_exceed_lognormal(pred: np.ndarray, limit: float, sigma: np.ndarray) -> np.ndarray:
    """P(X > limit) for log-normal X with median ``pred`` and log-sd ``sigma``."""
    pred = np.maximum(np.asarray(pred, dtype=float), 1e-12)
    sigma = np.maximum(np.asarray(sigma, dtype=float), 1e-6)
    z = (math.log(max(limit, 1e-12)) - np.log(pred)) / sigma
    return np.asarray(0.5 * special.erfc(z / math.sqrt(2.0)), dtype=float)


def p_exceed_normal(pred: np.ndarray, limit: float, sd: np.ndarray) -> np.ndarray:
    z = (limit - np.asarray(pred, dtype=float)) / np.maximum(np.asarray(sd, dtype=float), 1e-9)
    return np.asarray(0.5 * special.erfc(z / math.sqrt(2.0)), dtype=float)


def breach_probability(
    latency_ms: np.ndarray | None,
    latency_sigma: np.ndarray | float,
    obj: Objectives,
    error_rate: np.ndarray | None = None,
    error_sd: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Per-state probability of breaching the SLO (0 where nothing is predicted)."""
    p = None
    if latency_ms is not None:
        p = p_exceed_lognormal(
            latency_ms, obj.latency_ms, np.broadcast_to(latency_sigma, np.shape(latency_ms))
        )
    if obj.error_rate is not None and error_rate is not None:
        pe = p_exceed_normal(
            error_rate, obj.error_rate, np.broadcast_to(error_sd, np.shape(error_rate))
        )
        p = pe if p is None else 1.0 - (1.0 - p) * (1.0 - pe)
    if p is None:
        return np.zeros(0)
    return p


def utility(
    dt: np.ndarray,
    offered: np.ndarray,
    error_rate: np.ndarray | None,
    quality: np.ndarray | None,
    units: np.ndarray,
    p_breach: np.ndarray,
    obj: Objectives,
) -> tuple[float, dict[str, float]]:
    """The plan's utility over the horizon and its parts (value, penalty, cost)."""
    good = offered * (1.0 - (error_rate if error_rate is not None else 0.0))
    q = quality if quality is not None else 0.0
    p = p_breach if p_breach.shape[0] else np.zeros_like(offered)
    value = float(
        np.sum(dt * good * obj.value_per_request * (1.0 + obj.quality_weight * q) * (1.0 - p))
    )
    penalty = float(np.sum(dt * good * obj.value_per_request * obj.breach_penalty * p))
    cost = float(np.sum(dt * units * obj.cost_per_unit_hour / 3600.0))
    return value - penalty - cost, {"value": value, "penalty": penalty, "cost": cost}
