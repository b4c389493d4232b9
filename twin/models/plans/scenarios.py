"""Load scenarios: the load forecast reshaped before the actions are applied.

``parameters.scenario`` (default ``baseline``) and its knobs, all optional:

- ``baseline``: the forecast as it is, times ``load_factor`` (default 1);
- ``traffic_spike``: the load times ``spike_factor`` (alias ``load_factor``; default 2)
  from ``spike_start_minutes`` (default 10) for ``spike_minutes`` (default 20); ramps of
  ``spike_ramp_minutes`` (default 1) on each side;
- ``traffic_drop``: the load times ``load_factor`` (default 0.5) from
  ``drop_start_minutes`` (default 0) on;
- ``diurnal_peak``: a smooth peak (raised cosine) of height ``load_factor`` (default 1.5)
  at ``peak_minutes`` (default the middle of the horizon), ``peak_width_minutes`` wide
  (default the whole horizon).

``arrival_rate`` (req/s) replaces the forecast by a constant before the scenario shapes
it (the forecast's relative band is kept). Times count from the newest telemetry. An
unknown scenario or a bad number is INVALID_ARGUMENT naming the known ones. Pure:
arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from twin.core.errors import InvalidRequest

SCENARIOS = ("baseline", "traffic_spike", "traffic_drop", "diurnal_peak")
MAX_FACTOR = 1000.0


@dataclass(slots=True)
class Load:
    """Load over the horizon (req/s): mean and band, at ``times`` (epoch seconds)."""

    times: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str


def _num(
    params: Mapping[str, str], key: str, default: float, lo: float = 0.0, hi: float = math.inf
) -> float:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        v = float(str(raw))
    except ValueError as exc:
        raise InvalidRequest(f"not a number: {raw!r}", f"parameters.{key}") from exc
    if not math.isfinite(v) or v < lo or v > hi:
        raise InvalidRequest(f"must be within [{lo:g}, {hi:g}], got {raw}", f"parameters.{key}")
    return v


def scenario_name(params: Mapping[str, str]) -> str:
    name = str(params.get("scenario") or "baseline").strip().lower()
    if name not in SCENARIOS:
        raise InvalidRequest(
            f"unknown scenario {params.get('scenario')!r}; known: {', '.join(SCENARIOS)}",
            "parameters.scenario",
        )
    return name


def validate(params: Mapping[str, str], horizon_minutes: float) -> None:
    """Raises InvalidRequest for an unknown scenario or a malformed knob (no arrays needed)."""
    profile(params, np.zeros(1), horizon_minutes * 60.0)
    _num(params, "arrival_rate", 0.0)


def profile(
    params: Mapping[str, str], offsets: np.ndarray, horizon_sec: float
) -> tuple[np.ndarray, str]:
    """Multiplier per state (``offsets`` = seconds after now) and a description."""
    name = scenario_name(params)
    h = max(horizon_sec, 1.0)
    x = np.asarray(offsets, dtype=float)
    if name == "baseline":
        f = _num(params, "load_factor", 1.0, 0.0, MAX_FACTOR)
        return np.full(x.shape[0], f), ("" if f == 1.0 else f"× load_factor {f:g}")
    if name == "traffic_spike":
        f = _num(
            params,
            "spike_factor",
            _num(params, "load_factor", 2.0, 0.0, MAX_FACTOR),
            0.0,
            MAX_FACTOR,
        )
        start = _num(params, "spike_start_minutes", 10.0) * 60.0
        length = _num(params, "spike_minutes", _num(params, "spike_length_minutes", 20.0)) * 60.0
        ramp = max(_num(params, "spike_ramp_minutes", 1.0) * 60.0, 1e-9)
        up = np.clip((x - start) / ramp, 0.0, 1.0)
        down = np.clip((start + length - x) / ramp, 0.0, 1.0)
        m = 1.0 + (f - 1.0) * np.minimum(up, down)
        return (
            m,
            f"scenario traffic_spike: load ×{f:g} from +{start / 60:g} min for {length / 60:g} min",
        )
    if name == "traffic_drop":
        f = _num(params, "load_factor", 0.5, 0.0, MAX_FACTOR)
        start = _num(params, "drop_start_minutes", 0.0) * 60.0
        return np.where(
            x >= start, f, 1.0
        ), f"scenario traffic_drop: load ×{f:g} from +{start / 60:g} min"
    f = _num(params, "load_factor", 1.5, 0.0, MAX_FACTOR)
    peak = _num(params, "peak_minutes", h / 120.0) * 60.0
    width = max(_num(params, "peak_width_minutes", h / 60.0) * 60.0, 1e-9)
    z = np.clip((x - peak) / width, -0.5, 0.5)
    m = 1.0 + (f - 1.0) * np.cos(math.pi * z) ** 2
    return (
        m,
        f"scenario diurnal_peak: load up to ×{f:g} at +{peak / 60:g} min ({width / 60:g} min wide)",
    )


def shape(load: Load, params: Mapping[str, str], now: float, horizon_sec: float) -> Load:
    """The scenario applied to a load forecast (the band scales with the mean)."""
    mean, lo, hi, method = load.mean, load.lower, load.upper, load.method
    rate = params.get("arrival_rate")
    if rate not in (None, ""):
        r = _num(params, "arrival_rate", 0.0)
        base = np.maximum(mean, 1e-12)
        lo, hi = r * lo / base, r * hi / base
        mean = np.full(mean.shape[0], r)
        method = f"fixed at {r:g} req/s (parameters.arrival_rate)"
    m, how = profile(params, load.times - now, horizon_sec)
    if how:
        method += (", " if method else "") + how
    return Load(load.times, mean * m, np.maximum(lo * m, 0.0), hi * m, method)
