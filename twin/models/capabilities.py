"""Capabilities a world model may declare beyond ``WorldModel``, as Protocols.

A composite model (the hybrid) asks ``isinstance(member, ForecastConsumer)`` instead of
probing attributes or testing a member's name, so a new model gains a capability by
implementing the protocol, and a type checker sees the contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from twin.core.events import new_id
from twin.models.base import WorldModel
from twin.models.domain import SimulationRequest, SimulationResult

__all__ = [
    "AnomalyReporter",
    "AnomalySource",
    "BacktestReporter",
    "ForecastConsumer",
    "Forecaster",
    "LatencyBounded",
    "Refittable",
    "anomaly_source_from_model",
    "forecaster_from_model",
]

# (system or None, horizon in minutes, "now" as event time or None) -> a forecast
Forecaster = Callable[[str | None, int, float | None], Awaitable[SimulationResult | None]]
# () -> iterable of str or mappings (system, metric, score, since)
AnomalySource = Callable[[], Any]


@runtime_checkable
class ForecastConsumer(Protocol):
    """A model that grounds its answers in another model's forecasts (the LLM model).

    A composite that owns a forecasting member shares it through ``set_forecaster`` and,
    before building the consumer, applies ``shared_forecaster_settings`` so the consumer
    does not start a private forecaster of its own.
    """

    def set_forecaster(
        self, forecaster: Forecaster | None, anomaly_source: AnomalySource | None = None
    ) -> None: ...

    @classmethod
    def shared_forecaster_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class LatencyBounded(Protocol):
    """A model that declares how long an answer may take (an LLM: its request timeout)."""

    @classmethod
    def latency_budget_sec(cls, settings: Mapping[str, Any]) -> float: ...


@runtime_checkable
class AnomalyReporter(Protocol):
    """A model that knows which series are anomalous now (the statistical model)."""

    def current_anomalies(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class BacktestReporter(Protocol):
    """A model that knows its own out-of-sample forecast error per series.

    ``backtest_error(system, metric)`` is (mean absolute error, over how many seconds
    ahead) of the fitted forecaster on data it did not see, or None. The prediction
    ledger compares live errors with it to detect drift.
    """

    def backtest_error(self, system: str, metric: str) -> tuple[float, float] | None: ...


@runtime_checkable
class Refittable(Protocol):
    """A model that refits what it derived for one system on request (drift); returns
    how many of its parts (series) will be refitted."""

    def refit_system(self, system: str) -> int: ...


def forecaster_from_model(model: WorldModel) -> Forecaster:
    """A forecaster that asks another world model for a ``forecast`` simulation."""

    async def forecast(
        system: str | None, horizon_minutes: int, now: float | None
    ) -> SimulationResult | None:
        params = {"system": system} if system else {}
        request = SimulationRequest(new_id(), "forecast", [], max(1, horizon_minutes), params, now)
        return await model.simulate(request)

    return forecast


def anomaly_source_from_model(model: WorldModel) -> AnomalySource | None:
    """A model's ``current_anomalies``, if it reports anomalies."""
    return model.current_anomalies if isinstance(model, AnomalyReporter) else None
