"""Effects learned from the execution log: keys, pooling, bounds, and against the simulators."""

from __future__ import annotations

import numpy as np
import pytest

from twin.core.events import Point
from twin.core.state import TwinState
from twin.models.plans.effects import (
    EffectSettings,
    EffectTable,
    Observation,
    _Stat,
    action_key,
    level_trend,
)
from twin.models.plans.roles import RoleCache
from twin.tools.exemplars import experiments as X


def test_action_keys_are_canonical() -> None:
    assert (
        action_key("set_resolution", {"size": "416.0", "reason": "x"}) == "SET_RESOLUTION(size=416)"
    )
    assert (
        action_key("UPDATE_CONFIG", {"value": "50", "key": "DB_Pool"})
        == "UPDATE_CONFIG(key=db_pool,value=50)"
    )


def test_counterfactual_keeps_only_a_significant_trend() -> None:
    t = np.arange(60.0)
    flat = level_trend(t, 5.0 + np.sin(t), np.array([100.0]))
    assert flat[0] == pytest.approx(np.mean(5.0 + np.sin(t)))
    trend = level_trend(t, 2.0 * t, np.array([100.0]))
    assert trend[0] == pytest.approx(200.0)


def test_pooling_shrinks_and_reports_spread() -> None:
    from collections import deque

    st = _Stat("log", deque([Observation(0, -0.2, 0.01)]))
    one = st.pooled("service", 1.0)
    assert one.n == 1 and one.mean == pytest.approx(-0.2, abs=0.01) and one.predictive_sd >= 0.05
    st.obs.extend(
        [Observation(0, -0.1, 0.01), Observation(0, -0.3, 0.01), Observation(0, -0.2, 0.01)]
    )
    four = st.pooled("service", 1.0)
    assert four.tau > 0.05 and four.mean == pytest.approx(
        -0.2, abs=0.02
    )  # disagreeing occurrences: wide


def test_tables_are_bounded_and_unknown_actions_have_no_effect() -> None:
    table = EffectTable(EffectSettings(max_keys=3, max_pending=2))
    for i in range(5):
        table.on_action(float(i), "s", f"A{i}", {}, True)
    assert len(table.pending) == 2 and table.dropped_total == 3
    for i in range(5):
        table._add("s", f"K{i}", {"latency": ("log", Observation(0, 0.1, 0.01))})
    assert len(table.table) == 3
    assert table.estimate("s", "NEVER_SEEN", {}) == {}


def test_confounded_executions_are_skipped() -> None:
    st = TwinState()
    pts = [
        Point("s", n, float(t), v, u, None)
        for t in range(0, 1200, 10)
        for n, v, u in (
            ("request.rate", 10.0, "req/s"),
            ("replicas", 2.0, ""),
            ("cpu.utilization", 0.5, "ratio"),
        )
    ]
    st.apply_points(pts)
    table = EffectTable()
    table.on_action(500.0, "s", "RESTART", {}, True)
    table.on_action(560.0, "s", "RESTART", {}, True)  # inside the first one's windows
    roles = RoleCache({})
    assert table.process(st.store, lambda s: roles.roles(st.store, s)) == 0
    assert table.confounded_total == 2


@pytest.mark.parametrize("system", ["swim", "checkout"])
async def test_learned_effects_within_15_percent_after_5_executions(system: str) -> None:
    points = await X.learned_effect_errors(system, 7, checkpoints=(1, 5))
    five = next(p for p in points if p.n == 5)
    assert five.service_error <= 0.15, points
    assert abs(five.whatif_error) <= 0.10, points
