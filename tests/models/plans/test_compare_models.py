"""Plan comparison through every model: the plan engine's confidence, the mock's
per-plan what-ifs, the hybrid's per-plan fusion, gemini declining."""

from __future__ import annotations

import math

import pytest

from twin.core.state import TwinState
from twin.models.base import WorldModel
from twin.models.domain import (
    Action,
    CandidatePlan,
    PlanOutcome,
    PredictedState,
    SimulationRequest,
    SimulationResult,
)
from twin.models.hybrid import HybridWorldModel
from twin.models.mock import MockWorldModel
from twin.models.plans.skill import Skill
from twin.tools.exemplars import SwimTier, constant
from twin.tools.exemplars import experiments as X

T = 1_700_000_000.0


def _compare(*plans: tuple[str, list[Action]], **params: str) -> SimulationRequest:
    return SimulationRequest(
        "c",
        "compare",
        [],
        30,
        {"system": "swim", **params},
        None,
        [CandidatePlan(pid, acts) for pid, acts in plans],
    )


class Ledger:
    """A ledger that has scored what-ifs of swim: 40 of them, 90 % within ±10 %, 4 % error."""

    def skill(self, system: str, kind: str, metric: str | None = None) -> Skill:
        if system == "swim" and kind in ("what_if", "plan"):
            return Skill(40, 0.5, 0.04, 0.9, 1.0, 0.9)
        return Skill(0)


async def test_confidence_comes_from_the_ledger_when_it_has_history() -> None:
    twin = await X.TwinUnderTest.start()
    try:
        twin.feed(SwimTier(1, servers=4, dimmer=0.5).run(2400, constant(40.0)))
        await twin.fit("swim")
        act = [Action("ADD_SERVER", "swim", {"count": "1"})]
        prior = await twin.model.simulate(SimulationRequest("a", "what_if", act, 30, {}))
        twin.rt.state.ledger = Ledger()  # type: ignore[attr-defined]
        measured = await twin.model.simulate(SimulationRequest("b", "what_if", act, 30, {}))
        unknown = await twin.model.simulate(
            SimulationRequest("c", "what_if", act + [Action("RESTART", "swim")], 30, {})
        )
    finally:
        await twin.stop()
    assert (
        prior.metadata["confidence_basis"] == "prior" and "no scored history" in prior.explanation
    )
    assert (
        measured.metadata["confidence_basis"] == "ledger"
        and "measured: 40 scored" in measured.explanation
    )
    assert 0.85 < measured.confidence < 0.95  # 0.9 measured, weighed 40/45 against the prior
    assert (
        unknown.confidence < 0.5 * measured.confidence
    )  # an action nobody can model still costs confidence


async def test_mock_compares_by_one_what_if_per_plan() -> None:
    m = MockWorldModel(TwinState())
    await m.initialize()
    res = await m.simulate(
        _compare(
            ("add", [Action("ADD_SERVER", "swim", {"count": "2"})]),
            ("dim", [Action("SET_DIMMER", "swim", {"value": "0.2"})]),
        )
    )
    assert res.success and {o.plan_id for o in res.plan_outcomes} == {"add", "dim", "do_nothing"}
    assert sorted(o.rank for o in res.plan_outcomes) == [1, 2, 3]
    best = min(res.plan_outcomes, key=lambda o: o.rank)
    assert res.metadata["best_plan"] == best.plan_id and all(
        math.isfinite(o.utility) for o in res.plan_outcomes
    )


class Ranked(WorldModel):
    """A member that ranks plans with given utilities."""

    name = "ranked"

    def __init__(self, utilities: dict[str, float], conf: float) -> None:
        super().__init__(TwinState(), {})
        self.utilities, self.conf = utilities, conf

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        outs = [
            PlanOutcome(
                pid,
                0,
                u,
                0.1,
                [PredictedState(T + 60, {"average.response.time": 100.0 + u}, self.conf)],
                None,
                self.conf,
                f"{pid} by {self.name}",
            )
            for pid, u in self.utilities.items()
        ]
        for r, o in enumerate(sorted(outs, key=lambda o: -o.utility), 1):
            o.rank = r
        res = SimulationResult(True, outs[0].future_states, self.conf)
        res.plan_outcomes = outs
        return res

    async def diagnose(self, request):  # pragma: no cover - not used
        raise NotImplementedError


async def test_hybrid_fuses_plan_outcomes_per_plan_and_ranks_again() -> None:
    a = Ranked({"do_nothing": 10.0, "p1": 12.0, "p2": 11.0}, 0.8)
    b = Ranked({"do_nothing": 10.0, "p1": 9.0, "p2": 14.0}, 0.4)
    h = HybridWorldModel(
        TwinState(),
        {"members": ["a", "b"], "weights": {"a": 0.5, "b": 0.5}, "last_resort": []},
        members={"a": a, "b": b},
    )
    await h.initialize()
    res = await h.simulate(_compare(("p1", []), ("p2", [])))
    assert res.success
    fused = {o.plan_id: o for o in res.plan_outcomes}
    # weight x confidence: a 2/3, b 1/3
    assert fused["p1"].utility == pytest.approx(12.0 * 2 / 3 + 9.0 / 3)
    assert fused["p2"].utility == pytest.approx(11.0 * 2 / 3 + 14.0 / 3)
    assert fused["p2"].rank == 1 and fused["p1"].rank == 2 and fused["do_nothing"].rank == 3
    assert fused["p2"].future_states[0].metrics["average.response.time"] == pytest.approx(
        (111.0 * 0.8 + 114.0 * 0.4) / 1.2
    )
    assert res.metadata["best_plan"] == "p2" and "[a] p2 by ranked" in fused["p2"].explanation


async def test_gemini_declines_to_rank_plans_without_calling_the_llm() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from twin.models.llm.gemini import GeminiWorldModel

    chat = GenericFakeChatModel(messages=iter([]))  # any call would fail: no replies
    m = GeminiWorldModel(TwinState(), {"forecast_helper": "none"}, chat_model=chat)
    await m.initialize()
    res = await m.simulate(_compare(("p1", [Action("ADD_SERVER", "swim")])))
    assert (
        not res.success
        and "does not rank plans" in res.explanation
        and res.metadata["failure"] == "unsupported"
    )
