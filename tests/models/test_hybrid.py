"""Fusion, consensus, fallbacks and the member breakdown of the hybrid model (stub members)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from twin.core.errors import InvalidRequest, ModelUnavailable
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import (
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Hypothesis,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
    WorldModel,
)
from twin.models.hybrid import HybridWorldModel
from twin.service import mapping

T = 1_700_000_000.0


class Stub(WorldModel):
    """A member with canned answers, an optional delay and an optional failure."""

    name = "stub"

    def __init__(
        self,
        sim: SimulationResult | None = None,
        diag: DiagnosisResult | None = None,
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        answer: str | None = None,
    ) -> None:
        super().__init__(TwinState(), {})
        self.sim, self.diag, self.delay, self.error, self.answer = sim, diag, delay, error, answer
        self.seen: list[str] = []

    async def _go(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        await self._go()
        return self.sim or SimulationResult(False, explanation="stub cannot simulate")

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        await self._go()
        return self.diag or DiagnosisResult(False, explanation="stub cannot diagnose")

    async def query(self, request: QueryRequest) -> QueryResult:
        if request.query_type != "natural_language":
            return await super().query(request)
        await self._go()
        if self.answer is None:
            return QueryResult(False, None, 0.0, "stub does not understand questions")
        return QueryResult(True, {"answer": self.answer}, 0.9, self.answer, {"k": "v"})

    def update(self, batch: EventBatch) -> None:
        self.seen.append("update")

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        self.seen.append("calibrate")
        return {"bias": 0.5}

    def reset(self) -> None:
        self.seen.append("reset")


def sim(
    conf: float,
    states: list[tuple[float, dict[str, float], float]],
    lo: float = 0.0,
    hi: float = 1.0,
    impact: Impact | None = None,
) -> SimulationResult:
    return SimulationResult(
        True,
        [PredictedState(T + m * 60.0, v, c) for m, v, c in states],
        conf,
        lo,
        hi,
        "stub sim",
        impact,
    )


def diag(conf: float, hyps: list[tuple[str, float]], chain: str = "") -> DiagnosisResult:
    return DiagnosisResult(
        True,
        [Hypothesis(h, p, f"because {h}", [f"ev:{h}"], i + 1) for i, (h, p) in enumerate(hyps)],
        chain,
        conf,
        "stub diag",
        [f"sup:{hyps[0][0]}"],
    )


async def hybrid(members: dict[str, WorldModel], **settings: Any) -> HybridWorldModel:
    s = {"members": list(members), "last_resort": []} | settings
    h = HybridWorldModel(TwinState(), s, members=members)
    await h.initialize()
    return h


SIM_REQ = SimulationRequest("s1", "forecast", [], 20)


# ---------------------------------------------------------------- simulation fusion
async def test_confidence_weighted_fusion_exact_numbers() -> None:
    g = Stub(
        sim(
            0.5,
            [(10, {"u": 0.8, "rt": 200.0}, 0.5), (20, {"u": 1.0}, 0.5)],
            lo=0.4,
            hi=0.6,
            impact=Impact(2.0, 10.0, 0.1, "USD", "more"),
        )
    )
    s = Stub(
        sim(
            0.8,
            [(10, {"u": 0.5, "rt": 220.0}, 0.8), (20, {"u": 0.8}, 0.8)],
            lo=0.7,
            hi=0.9,
            impact=Impact(1.0, 4.0, 0.3, "USD", "less"),
        )
    )
    h = await hybrid({"gemini": g, "statistical": s}, consensus={"agreement_threshold": 0.5})
    res = await h.simulate(SIM_REQ)
    assert res.success
    # weights 0.6 x 0.5 = 0.30 and 0.3 x 0.8 = 0.24 → shares 0.5556 / 0.4444
    wg, ws = 0.6 * 0.5, 0.3 * 0.8
    assert [s.t for s in res.future_states] == [T + 600.0, T + 1200.0]
    assert res.future_states[0].metrics["u"] == pytest.approx(
        (wg * 0.8 + ws * 0.5) / (wg + ws)
    )  # 0.66667
    assert res.future_states[0].metrics["rt"] == pytest.approx(
        (wg * 200 + ws * 220) / (wg + ws)
    )  # 208.889
    assert res.future_states[1].metrics["u"] == pytest.approx(
        (wg * 1.0 + ws * 0.8) / (wg + ws)
    )  # 0.91111
    # state confidence: configured-weight mean of the members' confidences
    assert res.future_states[0].confidence == pytest.approx((0.6 * 0.5 + 0.3 * 0.8) / 0.9)  # 0.6
    assert res.confidence == pytest.approx(0.6)
    a_g, a_s = wg / (wg + ws), ws / (wg + ws)
    assert res.uncertainty_lower == pytest.approx(a_g * 0.4 + a_s * 0.7)
    assert res.uncertainty_upper == pytest.approx(a_g * 0.6 + a_s * 0.9)
    assert res.impact.cost_impact == pytest.approx(a_g * 2.0 + a_s * 1.0)
    assert res.impact.performance_impact == pytest.approx(a_g * 10.0 + a_s * 4.0)
    # relative spreads: |0.8-0.5|/0.6667, |200-220|/208.89, |1.0-0.8|/0.9111
    spreads = [0.3 / 0.6666667, 20 / 208.888889, 0.2 / 0.9111111]
    assert res.custom_metrics["mean_relative_spread"] == pytest.approx(sum(spreads) / 3, rel=1e-5)
    assert res.metadata["consensus"] == "true"
    md = res.metadata
    assert md["members"] == "gemini,statistical" and md["weights"] == "gemini=0.6,statistical=0.3"
    assert (
        md["member.gemini.effective_weight"] == "0.5556"
        and md["member.statistical.effective_weight"] == "0.4444"
    )
    assert md["member.statistical.confidence"] == "0.8"
    assert md["dropped"] == "" and md["fusion"] == "confidence_weighted_mean"
    pb = mapping.from_simulation("s1", res, 0.1)
    assert pb.metadata["members"] == "gemini,statistical" and len(pb.future_states) == 2


async def test_prediction_intervals_are_fused_and_widened_on_disagreement() -> None:
    g = Stub(sim(0.5, [(10, {"rt": 200.0}, 0.5)], lo=0.4, hi=0.6))
    stat = sim(
        0.8, [(10, {"rt": 220.0, "rt.lower": 200.0, "rt.upper": 240.0}, 0.8)], lo=200.0, hi=240.0
    )
    stat.metadata["uncertainty_metric"] = "rt"  # the statistical model's band is in rt's units
    h = await hybrid({"gemini": g, "statistical": Stub(stat)})
    res = await h.simulate(SIM_REQ)
    wg, ws = 0.6 * 0.5, 0.3 * 0.8
    m = res.future_states[0].metrics
    assert m["rt"] == pytest.approx((wg * 200 + ws * 220) / (wg + ws))  # 208.889
    assert m["rt.lower"] == pytest.approx(
        (wg * 200 + ws * 200) / (wg + ws)
    )  # gemini counts as a point
    assert m["rt.upper"] == pytest.approx((wg * 200 + ws * 240) / (wg + ws))  # 217.778
    assert res.metadata["consensus"] == "true" and res.metadata["uncertainty_metric"] == "rt"
    assert (res.uncertainty_lower, res.uncertainty_upper) == (
        pytest.approx(200.0),
        pytest.approx(m["rt.upper"]),
    )
    # far apart: no consensus, every interval covers all members
    g2 = Stub(sim(0.5, [(10, {"rt": 100.0, "u": 0.5}, 0.5)]))
    h2 = await hybrid({"gemini": g2, "statistical": Stub(stat)})
    res2 = await h2.simulate(SIM_REQ)
    m2 = res2.future_states[0].metrics
    assert res2.metadata["consensus"] == "false"
    assert (m2["rt.lower"], m2["rt.upper"]) == (100.0, 240.0)
    assert m2["u"] == 0.5 and "u.lower" not in m2  # predicted by one member only


async def test_members_on_other_time_grids_are_interpolated() -> None:
    g = Stub(sim(0.9, [(10, {"u": 2.0}, 0.9), (20, {"u": 3.0}, 0.9)]))
    s = Stub(sim(0.5, [(5, {"u": 1.0}, 0.5), (15, {"u": 2.0}, 0.5), (25, {"u": 3.0}, 0.5)]))
    h = await hybrid({"gemini": g, "statistical": s})
    res = await h.simulate(SIM_REQ)
    # grid of gemini (most trusted); statistical interpolated to 1.5 at +10 and 2.5 at +20
    wg, ws = 0.6 * 0.9, 0.3 * 0.5
    assert res.future_states[0].metrics["u"] == pytest.approx((wg * 2.0 + ws * 1.5) / (wg + ws))
    assert res.future_states[1].metrics["u"] == pytest.approx((wg * 3.0 + ws * 2.5) / (wg + ws))
    assert res.metadata["time_grid"] == "gemini"


async def test_disagreement_lowers_confidence_and_says_so() -> None:
    g = Stub(sim(0.8, [(10, {"rt": 100.0}, 0.8)], lo=0.7, hi=0.9))
    s = Stub(sim(0.8, [(10, {"rt": 300.0}, 0.8)], lo=0.5, hi=0.95))
    h = await hybrid({"gemini": g, "statistical": s})
    res = await h.simulate(SIM_REQ)
    assert res.success
    fused = (0.48 * 100 + 0.24 * 300) / 0.72  # 166.67
    assert res.future_states[0].metrics["rt"] == pytest.approx(fused)
    assert res.metadata["consensus"] == "false"
    assert "NO CONSENSUS" in res.explanation and "members disagree" in res.explanation
    assert res.confidence == pytest.approx(0.8 * 0.5)  # penalty 0.5
    assert res.future_states[0].confidence == pytest.approx(0.4)
    # envelope of the members' bands under disagreement
    assert (res.uncertainty_lower, res.uncertainty_upper) == (
        pytest.approx(0.4),
        pytest.approx(0.95),
    )
    assert res.metadata["agreement.mean_relative_spread"] == f"{200 / fused:.4g}"
    assert h.metrics()["hybrid_no_consensus_total"] == 1.0


async def test_failing_member_is_dropped_and_reported() -> None:
    g = Stub(sim(0.8, [(10, {"u": 0.5}, 0.8)]))
    s = Stub(error=RuntimeError("fit diverged"))
    h = await hybrid({"gemini": g, "statistical": s})
    res = await h.simulate(SIM_REQ)
    assert res.success and res.future_states[0].metrics == {"u": 0.5}
    assert res.metadata["members"] == "gemini"
    assert res.metadata["dropped"] == "statistical"
    assert res.metadata["dropped.statistical"] == "failed: RuntimeError: fit diverged"
    assert res.metadata["consensus"] == "false" and "only 1 member(s) answered" in res.explanation
    assert res.confidence == pytest.approx(0.4)
    assert h.metrics()["hybrid_member_failures_total.statistical"] == 1.0


async def test_slow_member_is_dropped_within_its_latency_budget() -> None:
    g = Stub(sim(0.8, [(10, {"u": 0.5}, 0.8)]), delay=5.0)
    s = Stub(sim(0.6, [(10, {"u": 0.7}, 0.6)]))
    h = await hybrid(
        {"gemini": g, "statistical": s},
        latency_budget_sec={"gemini": 0.1},
        consensus={"min_models": 1},
    )
    t0 = time.perf_counter()
    res = await h.simulate(SIM_REQ)
    assert time.perf_counter() - t0 < 1.0
    assert res.success and res.metadata["members"] == "statistical"
    assert res.metadata["dropped.gemini"] == "timed out after 0.1s (latency budget)"
    assert res.metadata["consensus"] == "true" and res.confidence == pytest.approx(0.6)


async def test_last_resort_only_when_primaries_fail() -> None:
    g = Stub(sim(0.8, [(10, {"u": 0.5}, 0.8)]))
    m = Stub(sim(0.3, [(10, {"u": 9.0}, 0.3)]))
    h = await hybrid({"gemini": g, "mock": m}, last_resort=["mock"], consensus={"min_models": 1})
    res = await h.simulate(SIM_REQ)
    assert res.metadata["members"] == "gemini" and res.future_states[0].metrics == {"u": 0.5}
    assert res.metadata["dropped.mock"] == "last resort, not needed"
    g.error = RuntimeError("LLM down")
    res = await h.simulate(SIM_REQ)
    assert (
        res.success
        and res.metadata["members"] == "mock"
        and res.future_states[0].metrics == {"u": 9.0}
    )
    assert res.metadata["dropped.gemini"] == "failed: RuntimeError: LLM down"


async def test_all_members_failing_is_an_in_band_failure() -> None:
    g = Stub(error=TimeoutError("slow"))
    s = Stub()  # success=False answer
    m = Stub(error=ValueError("no data"))
    h = await hybrid({"gemini": g, "statistical": s, "mock": m}, last_resort=["mock"])
    res = await h.simulate(SIM_REQ)
    assert not res.success and res.future_states == []
    assert res.explanation.startswith("hybrid: no member could simulate (")
    assert "gemini: failed: TimeoutError: slow" in res.explanation
    assert "statistical: no answer: stub cannot simulate" in res.explanation
    assert "mock: failed: ValueError: no data" in res.explanation
    assert not mapping.from_simulation("s", res, 0.0).success
    d = await h.diagnose(DiagnosisRequest("d"))
    assert not d.success and "no member could diagnose" in d.explanation
    assert h.metrics()["hybrid_all_failed_total"] == 2.0


async def test_invalid_request_from_a_member_propagates() -> None:
    g = Stub(error=InvalidRequest("bad step", "parameters.step_minutes"))
    s = Stub(sim(0.8, [(10, {"u": 0.5}, 0.8)]), delay=0.2)
    h = await hybrid({"gemini": g, "statistical": s})
    with pytest.raises(InvalidRequest):
        await h.simulate(SIM_REQ)


# ---------------------------------------------------------------- diagnosis merge
async def test_diagnoses_are_merged_and_reranked() -> None:
    g = Stub(
        diag=diag(
            0.5,
            [("Database connection pool exhausted", 0.6), ("traffic spike", 0.3)],
            "pool -> latency",
        )
    )
    s = Stub(
        diag=diag(
            1.0,
            [("database connection pool exhausted.", 0.5), ("memory leak in the web tier", 0.4)],
            "stat chain",
        )
    )
    h = await hybrid({"gemini": g, "statistical": s})
    res = await h.diagnose(DiagnosisRequest("d1", "latency"))
    assert res.success
    # shares: 0.6 x 0.5 = 0.3 and 0.3 x 1.0 = 0.3 → 0.5 / 0.5 (linear opinion pool)
    assert [(x.hypothesis, x.probability, x.rank) for x in res.hypotheses] == [
        ("Database connection pool exhausted", pytest.approx(0.5 * 0.6 + 0.5 * 0.5), 1),
        ("memory leak in the web tier", pytest.approx(0.5 * 0.4), 2),
        ("traffic spike", pytest.approx(0.5 * 0.3), 3),
    ]
    top = res.hypotheses[0]
    assert top.evidence == [
        "ev:Database connection pool exhausted",
        "ev:database connection pool exhausted.",
    ]
    assert top.reasoning.startswith("supported by gemini (0.300), statistical (0.250)")
    assert sum(x.probability for x in res.hypotheses) <= 1.0
    assert res.confidence == pytest.approx((0.6 * 0.5 + 0.3 * 1.0) / 0.9)
    assert res.causal_chain == "pool -> latency"
    assert res.metadata["consensus"] == "true" and res.metadata["hypotheses_merged"] == "1"
    assert res.metadata["fusion"] == "linear_opinion_pool"
    pb = mapping.from_diagnosis("d1", res)
    assert [x.rank for x in pb.hypotheses] == [1, 2, 3]


async def test_diagnosis_disagreement_on_the_top_hypothesis() -> None:
    g = Stub(diag=diag(0.8, [("network partition", 0.7)]))
    s = Stub(diag=diag(0.8, [("disk full on db host", 0.9)]))
    h = await hybrid({"gemini": g, "statistical": s}, consensus={"min_top_agreement": 0.7})
    res = await h.diagnose(DiagnosisRequest("d"))
    # shares 2/3 and 1/3: 0.6667 x 0.7 = 0.4667 vs 0.3333 x 0.9 = 0.3
    assert [x.hypothesis for x in res.hypotheses] == ["network partition", "disk full on db host"]
    assert res.hypotheses[0].probability == pytest.approx(0.7 * 2 / 3)
    assert (
        res.metadata["consensus"] == "false" and "disagree on the top hypothesis" in res.explanation
    )
    assert res.confidence == pytest.approx(0.8 * 0.5)


# ---------------------------------------------------------------- queries, lifecycle, health
async def test_natural_language_follows_the_fallback_order() -> None:
    g = Stub(error=RuntimeError("quota"))
    s = Stub(answer="utilisation is fine")
    h = await hybrid(
        {"gemini": g, "statistical": s, "mock": Stub(answer="mock")},
        fallback_order=["gemini", "statistical", "mock"],
    )
    res = await h.query(QueryRequest("q", "natural_language", "how are we?"))
    assert res.success and res.result == {"answer": "utilisation is fine"}
    assert (
        res.metadata["answered_by"] == "statistical"
        and res.metadata["dropped.gemini"] == "failed: RuntimeError: quota"
    )
    assert res.metadata["statistical.k"] == "v"
    store = await h.query(QueryRequest("q", "current_state"))
    assert store.success


async def test_query_fallback_chain_stays_within_the_query_deadline() -> None:
    g = Stub(answer="late", delay=5.0)
    s = Stub(answer="statistical answer")
    h = await hybrid(
        {"gemini": g, "statistical": s}, latency_budget_sec={"gemini": 0.2}, query_deadline_sec=0.5
    )
    t0 = time.perf_counter()
    res = await h.query(QueryRequest("q", "natural_language", "how are we?"))
    assert time.perf_counter() - t0 < 1.0
    assert res.success and res.metadata["answered_by"] == "statistical"
    assert res.metadata["dropped.gemini"] == "timed out after 0.2s (latency budget)"
    h2 = await hybrid(
        {"gemini": Stub(answer="late", delay=5.0), "statistical": s},
        latency_budget_sec=5,
        query_deadline_sec=0.2,
    )
    res = await h2.query(QueryRequest("q", "natural_language", "how are we?"))
    assert not res.success
    assert "statistical: not asked: settings.query_deadline_sec=0.2s used up" in res.explanation


async def test_update_calibrate_reset_fan_out() -> None:
    a, b = Stub(), Stub()
    h = await hybrid({"gemini": a, "statistical": b})
    h.update(EventBatch())
    out = await h.calibrate(CalibrationRecord(T, "c", "p", {}, {}, {}))
    h.reset()
    assert a.seen == b.seen == ["update", "calibrate", "reset"]
    assert out == {"gemini.bias": 0.5, "statistical.bias": 0.5}


async def test_unavailable_member_is_dropped_with_an_issue_in_health() -> None:
    made: list[str] = []

    def factory(name: str, state: TwinState, settings: Any) -> WorldModel:
        made.append(name)
        if name == "statistical":
            raise ModelUnavailable("world model 'statistical' needs optional dependencies")
        return Stub(sim(0.7, [(10, {"u": 0.5}, 0.7)]))

    h = HybridWorldModel(
        TwinState(), {"members": ["gemini", "statistical", "mock"]}, member_factory=factory
    )
    await h.initialize()
    assert made == ["gemini", "statistical", "mock"]
    health = await h.health()
    assert health.status == "degraded"
    assert (
        "member statistical unavailable: cannot be created: world model 'statistical' needs "
        "optional dependencies"
        in health.issues
    )
    res = await h.simulate(SIM_REQ)
    assert res.success and res.metadata["members"] == "gemini"
    assert res.metadata["dropped.statistical"].startswith("unavailable: cannot be created")
    assert res.metadata["dropped.mock"] == "last resort, not needed"


async def test_hybrid_settings_validation() -> None:
    assert HybridWorldModel.validate_settings({"weights": {"gemini": -1}}, {}) == [
        "settings.weights.gemini: must be a finite number >= 0"
    ]
    assert "settings.members: a hybrid cannot contain itself" in HybridWorldModel.validate_settings(
        {"members": ["hybrid"]}, {}
    )
    # a missing API key is not a configuration error for the hybrid: it runs degraded
    assert HybridWorldModel.validate_settings({}, {}) == []
    assert HybridWorldModel.validate_settings({"call_timeout_sec": 40}, {}) == [
        "member gemini: settings.call_timeout_sec: must not exceed settings.request_timeout_sec"
    ]
    assert any(
        "unknown world model 'nope'" in e
        for e in HybridWorldModel.validate_settings({"members": ["nope", "mock"]}, {})
    )
