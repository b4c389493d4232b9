"""The statistical model's settings: every key, its type and its default, in one place.

Read from ``world_model.settings`` by ``twin.models.settings.parse_settings``; the
model, its forecast engine and its what-if all take this one object.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.models.statistical.anomaly import DEFAULT_THRESHOLD

__all__ = ["StatisticalSettings"]


@dataclass(frozen=True, slots=True)
class StatisticalSettings:
    # streaming anomalies
    anomaly_threshold: float = DEFAULT_THRESHOLD
    anomaly_ring_size: int = 1024
    anomaly_hold_points: int = 10
    # background fitting
    background_fitting: bool = True
    fit_interval_sec: float = 1.0
    max_fits_per_cycle: int = 8
    min_fit_points: int = 40
    max_fit_points: int = 4000
    refit_every_points: int = 2000
    refit_interval_sec: float = 6 * 3600.0  # event time
    drift_threshold: float = 2.5
    selection_horizon_steps: int = 60
    # forecasts
    max_forecast_steps: int = 20000
    max_forecast_states: int = 1440
    interval_level: float = 0.95
    # what-if
    max_whatif_states: int = 360
    capacity_window_sec: float = 3600.0  # event time
    cost_per_server_hour: float = 0.5
    cost_currency: str = "USD"
    # calibration
    calibration_min_weight: float = 0.3
