"""Load scenarios and the utility that ranks plans."""

from __future__ import annotations

import numpy as np
import pytest

from twin.core.errors import InvalidRequest
from twin.models.plans import scenarios, utility
from twin.models.plans.scenarios import Load


def _load(n: int = 61, rate: float = 10.0) -> Load:
    t = 1000.0 + 60.0 * np.arange(n)
    m = np.full(n, rate)
    return Load(t, m, m * 0.9, m * 1.1, "test")


def test_baseline_and_load_factor() -> None:
    out = scenarios.shape(_load(), {"load_factor": "2"}, 1000.0, 3600.0)
    assert (
        np.allclose(out.mean, 20.0)
        and np.allclose(out.upper, 22.0)
        and "load_factor 2" in out.method
    )


def test_traffic_spike_window() -> None:
    out = scenarios.shape(
        _load(),
        {
            "scenario": "traffic_spike",
            "spike_factor": "3",
            "spike_start_minutes": "10",
            "spike_minutes": "20",
        },
        1000.0,
        3600.0,
    )
    assert out.mean[5] == 10.0 and out.mean[20] == pytest.approx(30.0) and out.mean[40] == 10.0
    legacy = scenarios.shape(
        _load(), {"scenario": "traffic_spike", "load_factor": "2.5"}, 1000.0, 3600.0
    )
    assert legacy.mean[20] == pytest.approx(25.0)  # load_factor is the spike's height


def test_drop_and_diurnal_peak() -> None:
    drop = scenarios.shape(_load(), {"scenario": "traffic_drop"}, 1000.0, 3600.0)
    assert np.allclose(drop.mean, 5.0)
    peak = scenarios.shape(
        _load(), {"scenario": "diurnal_peak", "load_factor": "2"}, 1000.0, 3600.0
    )
    assert (
        peak.mean[30] == pytest.approx(20.0)
        and peak.mean[0] == pytest.approx(10.0)
        and peak.mean.max() == peak.mean[30]
    )


def test_arrival_rate_replaces_the_forecast() -> None:
    out = scenarios.shape(_load(), {"arrival_rate": "4"}, 1000.0, 3600.0)
    assert np.allclose(out.mean, 4.0) and np.allclose(out.upper, 4.4)


@pytest.mark.parametrize(
    "params",
    [
        {"scenario": "apocalypse"},
        {"load_factor": "-1"},
        {"spike_factor": "x", "scenario": "traffic_spike"},
        {"arrival_rate": "nan"},
    ],
)
def test_bad_scenarios_are_invalid(params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        scenarios.validate(params, 60)
    if "scenario" in params and params["scenario"] == "apocalypse":
        assert all(name in str(exc.value) for name in scenarios.SCENARIOS)


def test_objectives_layers_and_defaults() -> None:
    obj = utility.objectives(
        {"slo.latency_ms": "250"},
        {"utility": {"cost_per_unit_hour": 2}},
        {"slo": {"error_rate": 0.05}},
        has_tail=True,
    )
    assert (obj.latency_ms, obj.cost_per_unit_hour, obj.error_rate, obj.latency_stat) == (
        250.0,
        2.0,
        0.05,
        "tail",
    )
    d = utility.objectives({}, {}, {"cost_per_server_hour": 0.7}, has_tail=False)
    assert (d.latency_ms, d.latency_stat, d.error_rate, d.cost_per_unit_hour) == (
        1000.0,
        "mean",
        None,
        0.7,
    )
    with pytest.raises(InvalidRequest):
        utility.objectives({"slo.latency_ms": "0"}, {}, {}, False)
    with pytest.raises(InvalidRequest):
        utility.objectives({"utility.value_per_request": "cheap"}, {}, {}, False)


def test_utility_counts_value_penalty_and_cost() -> None:
    obj = utility.objectives(
        {
            "utility.value_per_request": "1",
            "utility.cost_per_unit_hour": "3600",
            "utility.quality_weight": "0",
        },
        {},
        {},
        False,
    )
    dt = np.array([10.0, 10.0])
    u, parts = utility.utility(
        dt, np.array([2.0, 2.0]), None, None, np.array([1.0, 1.0]), np.array([0.0, 1.0]), obj
    )
    assert parts == {"value": 20.0, "penalty": 20.0, "cost": 20.0} and u == -20.0
    p = utility.breach_probability(np.array([500.0, 2000.0]), 0.1, obj)
    assert p[0] < 0.01 and p[1] > 0.99
