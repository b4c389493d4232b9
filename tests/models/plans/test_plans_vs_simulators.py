"""The twin's what-ifs, plan comparisons and forecast intervals against the exemplar
simulators (smaller runs of bench/plans.py; the figures there are over 3 seeds x 100)."""

from __future__ import annotations

import numpy as np
import pytest

from twin.tools.exemplars import experiments as X


@pytest.mark.parametrize("system", X.SYSTEM_NAMES)
async def test_whatif_mean_latency_within_10_percent_up_to_utilisation_0_9(system: str) -> None:
    cases = await X.whatif_errors(system, 11, utils=(0.3, 0.7, 0.9), requests=200_000)
    assert cases
    errors = {(c.action, c.utilization): round(c.error, 3) for c in cases}
    assert all(abs(c.error) <= 0.10 for c in cases if c.utilization <= 0.8), errors
    assert float(np.mean([abs(c.error) for c in cases])) <= 0.06, errors


@pytest.mark.parametrize("system", X.SYSTEM_NAMES)
async def test_plan_choice_on_random_situations(system: str) -> None:
    results = [await X.plan_choice(system, 500 + i) for i in range(10)]
    matches = sum(r.match for r in results)
    regret = sum(r.regret for r in results) / sum(abs(r.best_utility) for r in results)
    detail = [(r.seed, r.twin_best, r.true_best, round(r.regret_share, 3)) for r in results]
    assert matches >= 7, detail  # bench/plans.py: 85-90 % over 3 x 100 situations
    assert regret <= 0.05, detail
    assert all(r.replicate_best in r.true_utilities for r in results)


def test_a_replicate_is_the_same_situation_with_other_random_draws() -> None:
    sit = X.make_situation("swim", 7)
    again = X.replicate(sit, 7)
    assert again.candidates == sit.candidates and again.params == sit.params
    a = sit.ex.fork().run(120.0, sit.truth_rate)
    b = again.ex.run(120.0, sit.truth_rate)
    c = X.replicate(sit, 7).ex.run(120.0, sit.truth_rate)
    assert not np.array_equal(a.bins.arrivals, b.bins.arrivals)  # other draws
    assert np.array_equal(b.bins.arrivals, c.bins.arrivals)  # reproducible
    assert abs(a.bins.arrivals.sum() / b.bins.arrivals.sum() - 1) < 0.2  # same load


@pytest.mark.parametrize("system", ["swim", "checkout"])
async def test_forecast_interval_coverage_is_near_nominal(system: str) -> None:
    inside, total = await X.forecast_coverage(system, 3, origins=2)
    assert total > 500 and 0.80 <= inside / total <= 0.99
