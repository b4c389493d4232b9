"""The statistical model scores a columnar batch (one ``score_batch`` call per series)
exactly as it scores the same points one by one: same scores, same anomalies, the same
anomaly_started/anomaly_cleared events, and executions applied with the batch learned."""

from __future__ import annotations

import numpy as np
import pytest

from twin.core.columns import ColumnsBuilder
from twin.core.events import Point
from twin.core.state import ActionRecord, TwinState
from twin.models.domain import EventBatch
from twin.models.statistical.model import StatisticalWorldModel


def _series(n: int, seed: int) -> list[Point]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        for k in range(3):
            v = (
                10 * k
                + np.sin(i / 20)
                + rng.normal(0, 0.1)
                + (500.0 if i in (700, 1300) and k == 1 else 0.0)
                + (300.0 if i > 1000 and k == 2 else 0.0)
            )
            out.append(Point("sys", f"m{k}", 1_600_000_000.0 + 60 * i, float(v), "u", None))
    return out


@pytest.mark.parametrize(
    "per_batch", [12, 150]
)  # 4 points per series (one by one), 50 (score_batch)
def test_columnar_update_equals_point_by_point(per_batch: int) -> None:
    pts = _series(1600, 3)
    a = StatisticalWorldModel(TwinState(), {"background_fitting": False})
    b = StatisticalWorldModel(TwinState(), {"background_fitting": False})
    flagged_a, flagged_b = [], []
    for i in range(0, len(pts), per_batch):
        chunk = pts[i : i + per_batch]
        a.update(EventBatch(chunk, (), ()))
        builder = ColumnsBuilder()
        builder.add_points(chunk)
        b.update(EventBatch(builder.build(), (), ()))
        flagged_a.append(sorted(a.anomalous))
        flagged_b.append(sorted(b.anomalous))
    assert flagged_a == flagged_b
    assert max(float(a.anomaly_scores(*k)[1].max()) for k in a.tracks) >= a.threshold  # it did fire
    assert a.anomalous == b.anomalous and a.points_scored == b.points_scored == len(pts)
    ev_a, ev_b = _transitions(a), _transitions(b)
    assert {k for k, *_ in ev_a} == {"anomaly_started", "anomaly_cleared"}
    assert ev_a == ev_b
    for key in a.tracks:
        ta, sa = a.anomaly_scores(*key)
        tb, sb = b.anomaly_scores(*key)
        assert np.array_equal(ta, tb) and np.allclose(sa, sb, rtol=0, atol=1e-9)
        assert abs(a.tracks[key].last_score - b.tracks[key].last_score) <= 1e-9


def _transitions(m: StatisticalWorldModel) -> list[tuple[object, ...]]:
    """Published anomaly events, per series in event time (series interleave differently)."""
    return sorted(
        (e.kind, e.system, e.data["metric"], e.t, tuple(sorted(e.data.items())))
        for e in m.state.events.history
    )


def test_executions_applied_with_a_batch_message_are_learned() -> None:
    model = StatisticalWorldModel(TwinState(), {"background_fitting": False})
    builder = ColumnsBuilder()
    builder.add_points(_series(20, 1))
    act = ActionRecord(
        1_600_000_600.0, "a1", "ADD_SERVER", "sys", "ok", True, 1.0, "", params={"count": "1"}
    )
    model.update(EventBatch(builder.build(), [act], ()))
    assert [p.system for p in model.plans.effects.pending] == ["sys"]
