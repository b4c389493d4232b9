"""The what-if queueing model against a SimPy discrete-event simulation of the same tier.

For each target utilisation the DES first runs the *current* configuration; its
SWIM-named telemetry (10 s aggregates) is ingested into the model, which calibrates
service times from utilisation/throughput/response times by itself. The model then
predicts the effect of an action, and the DES runs the *new* configuration: the
predicted mean response time must be within 10 % of the simulated one.
"""

from __future__ import annotations

import pytest
from swim_des import run_swim_des, telemetry_points

from twin.models.base import Action, SimulationRequest

from stat_support import feed, runtime

S_BASIC, S_OPT = 0.05, 0.09  # seconds (hidden from the model: it learns them from telemetry)

# (target utilisation after the action, base servers, base dimmer, action, new servers, new dimmer)
CASES = [
    (0.3, 5, 0.5, Action("REMOVE_SERVER", "swim", {"count": "1"}), 4, 0.5),
    (0.5, 5, 0.5, Action("REMOVE_SERVER", "swim", {"count": "1"}), 4, 0.5),
    (0.7, 3, 0.5, Action("ADD_SERVER", "swim", {"count": "1"}), 4, 0.5),
    (0.8, 4, 0.2, Action("SET_DIMMER", "swim", {"value": "0.8"}), 4, 0.8),
    (0.9, 5, 0.5, Action("REMOVE_SERVER", "swim", {"count": "1"}), 4, 0.5),
]


def _requests(u: float) -> int:
    return 200_000 if u >= 0.85 else 60_000


@pytest.mark.parametrize("case", CASES, ids=[f"u={c[0]}-{c[3].action_type}" for c in CASES])
async def test_predicted_response_time_within_10_percent_of_des(case) -> None:
    u, c0, d0, action, c1, d1 = case
    es1 = d1 * S_OPT + (1 - d1) * S_BASIC
    lam = u * c1 / es1
    base = run_swim_des(lam, c0, d0, S_BASIC, S_OPT, 40_000, seed=11, interval=10.0)
    truth = run_swim_des(lam, c1, d1, S_BASIC, S_OPT, _requests(u), seed=23)
    rt = await runtime(capacity_window_sec=1e7)
    try:
        feed(rt, telemetry_points(base.telemetry))
        await rt.model.fit_all()
        res = await rt.model.simulate(SimulationRequest("w", "what_if", [action], 30, {}))
        assert res.success and res.metadata["action_effects_modelled"] == "true"
        predicted = res.custom_metrics["predicted_avg_rt_ms_mean"] / 1000.0
        err = abs(predicted - truth.mean_rt) / truth.mean_rt
        assert err < 0.10, (
            f"u={u}: predicted {predicted * 1000:.1f} ms, DES {truth.mean_rt * 1000:.1f} ms "
            f"({err:.1%})"
        )
        util = res.future_states[0].metrics["server.utilization"]
        assert util == pytest.approx(truth.utilization, rel=0.05)
    finally:
        await rt.shutdown()
