"""The hybrid with real members: the mock model and the gemini chain on a fake chat model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage
from pydantic import Field

from twin.core.events import Point
from twin.core.state import TwinState
from twin.models.base import (
    Action,
    DiagnosisRequest,
    PredictedState,
    SimulationRequest,
    SimulationResult,
    WorldModel,
)
from twin.models.hybrid import HybridWorldModel
from twin.models.llm.gemini import GeminiWorldModel
from twin.models.mock import MockWorldModel
from twin.service import mapping

T0 = 1_700_000_000.0


class Recording(GenericFakeChatModel):
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        self.calls.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def swim_state() -> TwinState:
    st = TwinState()
    pts = []
    for i in range(30):
        t = T0 + 60.0 * i
        pts += [
            Point("swim", "active.servers", t, 3.0, "count", None),
            Point("swim", "server.utilization", t, 0.6 + 0.002 * i, "ratio", None),
            Point("swim", "average.response.time", t, 200.0 + (i % 2), "ms", None),
        ]
    st.apply_points(pts)
    return st


async def test_real_mock_and_gemini_chain_fused(capsys: pytest.CaptureFixture[str]) -> None:
    state = swim_state()
    now = T0 + 29 * 60.0
    # the mock's what-if: 4 servers → utilisation 0.658 x 3/4, response time 201 x 3/4, every 5 min
    reply = {
        "future_states": [
            {
                "minutes_ahead": m,
                "metrics": {
                    "active.servers": 4.0,
                    "server.utilization": 0.52,
                    "average.response.time": 160.0,
                },
                "confidence": 0.8,
            }
            for m in (5, 10, 15)
        ],
        "confidence": 0.8,
        "impact": {
            "cost_impact": 1.0,
            "performance_impact": 41.0,
            "reliability_impact": 0.45,
            "description": "one more server",
        },
        "explanation": "load spreads over four servers",
    }
    chat = Recording(messages=iter([json.dumps(reply)]))
    gemini = GeminiWorldModel(state, {"forecast_helper": "none"}, chat_model=chat)
    mock = MockWorldModel(state)
    h = HybridWorldModel(
        state,
        {"members": ["gemini", "mock"], "last_resort": []},
        members={"gemini": gemini, "mock": mock},
    )
    await h.initialize()
    assert (await h.health()).status == "healthy"
    req = SimulationRequest(
        "what-if-1",
        "what_if",
        [Action("ADD_SERVER", "swim", {"count": "1"})],
        15,
        {"step_minutes": "5"},
    )
    res = await h.simulate(req)
    assert res.success, res.explanation
    assert "ADD_SERVER" in "\n".join(str(m.content) for m in chat.calls[0])

    mock_util = (0.6 + 0.002 * 29) * 3 / 4
    mock_conf = [0.8 * 2.718281828459045 ** (-m / 240.0) for m in (5, 10, 15)]
    wg = 0.6 * 0.8
    for i, st in enumerate(res.future_states):
        assert st.t == now + (i + 1) * 300.0
        wm = 0.1 * mock_conf[i]
        assert st.metrics["server.utilization"] == pytest.approx(
            (wg * 0.52 + wm * mock_util) / (wg + wm), rel=1e-6
        )
        assert st.metrics["active.servers"] == pytest.approx(4.0)
    assert res.metadata["members"] == "gemini,mock"
    assert res.metadata["consensus"] == "true"
    assert (
        res.metadata["member.gemini.weight"] == "0.6"
        and res.metadata["member.mock.weight"] == "0.1"
    )
    pb = mapping.from_simulation("what-if-1", res, 0.02)
    assert pb.success and len(pb.future_states) == 3
    sample = {
        "explanation": pb.explanation,
        "confidence": round(pb.confidence, 4),
        "uncertainty": [round(pb.uncertainty_lower, 4), round(pb.uncertainty_upper, 4)],
        "first_state": {
            "timestamp": pb.future_states[0].timestamp,
            "metrics": {k: round(v, 4) for k, v in pb.future_states[0].metrics.items()},
            "confidence": round(pb.future_states[0].confidence, 4),
        },
        "impact": {
            "cost": round(pb.impact_estimates.cost_impact, 4),
            "performance": round(pb.impact_estimates.performance_impact, 4),
            "reliability": round(pb.impact_estimates.reliability_impact, 4),
        },
        "metadata": dict(sorted(pb.metadata.items())),
    }
    with capsys.disabled():
        print("\nSAMPLE HYBRID ANSWER\n" + json.dumps(sample, indent=2))


async def test_llm_down_keeps_serving_degraded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default members from the registry, no API key: gemini is dropped, the rest answer."""
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    state = swim_state()
    h = HybridWorldModel(state, {"latency_budget_sec": {"statistical": 20}})
    await h.initialize()
    try:
        health = await h.health()
        assert health.status == "degraded"
        assert any(
            "member gemini is unhealthy" in i and "GEMINI_API_KEY" in i for i in health.issues
        )
        res = await h.simulate(
            SimulationRequest("s", "what_if", [Action("ADD_SERVER", "swim")], 30)
        )
        assert res.success, res.explanation
        assert "GEMINI_API_KEY" in res.metadata["dropped.gemini"]
        # the statistical model answers when it is installed; otherwise the mock (last resort)
        if "statistical" in h.members:
            assert (
                "statistical" in res.metadata["members"].split(",")
                or "statistical" in res.metadata["dropped"]
            )
        else:
            assert res.metadata["members"] == "mock"
            assert res.metadata["dropped.statistical"].startswith("unavailable")
        d = await h.diagnose(DiagnosisRequest("d", "response time", None, {"system": "swim"}))
        assert d.success and "gemini" in d.metadata["dropped"]
    finally:
        await h.shutdown()


class Forecasting(WorldModel):
    """Stands in for the statistical member: a fixed forecast and one anomaly."""

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        states = [
            PredictedState(
                T0 + 3600.0,
                {
                    "server.utilization": 0.7777,
                    "server.utilization.lower": 0.7,
                    "server.utilization.upper": 0.85,
                },
                0.9,
            )
        ]
        return SimulationResult(True, states, 0.9, 0.8, 1.0, "stat forecast")

    def current_anomalies(self) -> list[dict[str, Any]]:
        return [
            {
                "system": "swim",
                "metric": "average.response.time",
                "score": 0.99991,
                "since": "2023-11-14T22:40:00Z",
            }
        ]

    async def diagnose(self, request: DiagnosisRequest) -> Any:
        raise NotImplementedError


async def test_gemini_member_is_grounded_in_the_statistical_member() -> None:
    state = swim_state()
    reply = {"hypotheses": [{"hypothesis": "load growth", "probability": 0.5}], "confidence": 0.6}
    chat = Recording(messages=iter([json.dumps(reply)] * 2))
    members = {
        "gemini": GeminiWorldModel(state, {"forecast_helper": "none"}, chat_model=chat),
        "statistical": Forecasting(state),
    }
    h = HybridWorldModel(state, {"members": ["gemini", "statistical"]}, members=members)
    await h.initialize()
    res = await h.simulate(SimulationRequest("s", "forecast", [], 60, {"system": "swim"}))
    # gemini answered with a diagnosis-shaped reply twice → invalid → dropped; statistical answered
    assert res.success and res.metadata["members"] == "statistical"
    assert "no valid simulation answer" in res.metadata["dropped.gemini"]
    prompt = "\n".join(str(m.content) for m in chat.calls[0])
    assert (
        "forecast (statistical model):" in prompt
        and "server.utilization=0.7777 [0.7, 0.85]" in prompt
    )
    assert (
        "- swim/average.response.time (statistical anomaly score 0.9999 since 2023-11-14T22:40:00Z)"
        in prompt
    )
