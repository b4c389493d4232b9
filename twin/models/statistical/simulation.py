"""What the statistical model's two simulations share: their inputs and "pick a system".

``forecast_simulation`` and ``whatif`` are plain functions of a ``SimulationContext``
(the store, the cached forecasters, the calibration and the settings) and the request,
so each can be read, and tested, without the model's lifecycle around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.state import TwinState
from twin.models.domain import SimulationRequest, SimulationResult
from twin.models.state_queries import requested_system
from twin.models.statistical.calibration import Calibrator
from twin.models.statistical.forecast import ForecastEngine, ForecastOut
from twin.models.statistical.settings import StatisticalSettings

__all__ = ["DEFAULT_SYSTEM", "SimulationContext", "calibrated", "pick_system", "resolve_system"]

DEFAULT_SYSTEM = "swim"  # chosen when a request names no system and the twin knows it


@dataclass(slots=True)
class SimulationContext:
    """The model's parts a simulation reads; ``fallback_forecasts`` counts unfitted answers."""

    state: TwinState
    engine: ForecastEngine
    calibrator: Calibrator
    settings: StatisticalSettings
    fallback_forecasts: int = 0


def pick_system(state: TwinState, request: SimulationRequest) -> tuple[str | None, str]:
    """The system a simulation is about, and a note when the twin had to choose it.

    An action's target wins, then ``parameters.system``; without either the twin
    picks ``swim`` if it knows it, else its first system, and says so.
    """
    target = next((a.target for a in request.actions if a.target), None)
    target = target or requested_system(request.parameters)
    if target:
        return target, ""
    sources = state.store.sources()
    if not sources:
        return None, ""
    chosen = DEFAULT_SYSTEM if DEFAULT_SYSTEM in sources else sources[0]
    return chosen, f" (no system given; chose {chosen!r} of {', '.join(sources)})"


def resolve_system(
    state: TwinState, request: SimulationRequest, verb: str
) -> tuple[str, str] | SimulationResult:
    """``pick_system``, or the in-band failure when there is nothing to ``verb``."""
    system, note = pick_system(state, request)
    if system is None:
        return SimulationResult(
            False, explanation=f"the twin has received no telemetry yet; nothing to {verb}"
        )
    sources = state.store.sources()
    if system not in sources:
        known = ", ".join(sources) or "none yet"
        return SimulationResult(False, explanation=f"unknown system {system!r}; known: {known}")
    return system, note


def calibrated(calibrator: Calibrator, system: str, metric: str, out: ForecastOut) -> ForecastOut:
    """A forecast with the metric's calibration correction (bias or factor) applied."""
    c = calibrator.corrections.get((system, metric))
    if c is None:
        return out
    if c.additive:
        b = c.bias
        method = out.method + f" + calibration bias {b:.4g}"
        return ForecastOut(
            out.times, out.mean + b, out.lower + b, out.upper + b,
            out.step, out.fitted, method, out.truncated,
        )
    f = c.factor
    method = out.method + f" × calibration factor {f:.4g}"
    return ForecastOut(
        out.times, out.mean * f, out.lower * f, out.upper * f,
        out.step, out.fitted, method, out.truncated,
    )
