"""The gemini world model driven through its real LangChain chain on fake chat models.

No test touches the network: chat models are LangChain fakes (or a real
``ChatGoogleGenerativeAI`` that is constructed but never called).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import orjson
import pytest
from langchain_core.exceptions import ModelAuthenticationError, ModelRateLimitError
from langchain_core.messages import AIMessage

from twin.core.events import Point, iso
from twin.core.state import ActionRecord, TwinState
from twin.models.base import (
    Action,
    DiagnosisRequest,
    PredictedState,
    QueryRequest,
    SimulationRequest,
    SimulationResult,
)
from twin.models.llm import budget as budget_mod
from twin.models.llm.gemini import GeminiWorldModel
from twin.models.llm.runner import is_transient
from twin.service import mapping

from llm_fakes import HttpError, RecordingChatModel, ScriptedChatModel, recording

T0 = 1_700_000_000.0
NOW = T0 + 59 * 60.0

QUERY_OK = {
    "answer": "Server utilization is 0.89 and rising about 0.007 per minute.",
    "confidence": 0.8,
    "facts": ["swim/server.utilization=0.89"],
    "referenced_metrics": ["server.utilization"],
}
SIM_OK = {
    "future_states": [
        {
            "minutes_ahead": 30,
            "metrics": {"server.utilization": 0.62, "average.response.time": 190.0},
            "confidence": 0.7,
            "description": "settled",
        },
        {
            "minutes_ahead": 15,
            "metrics": {"server.utilization": 0.66, "average.response.time": 210.0},
            "confidence": 0.8,
            "description": "after scale-out",
        },
    ],
    "confidence": 0.75,
    "uncertainty_lower": 0.6,
    "uncertainty_upper": 0.85,
    "impact": {
        "cost_impact": 1.0,
        "performance_impact": 25.0,
        "reliability_impact": 0.1,
        "description": "one more server",
    },
    "explanation": "adding a server spreads the load",
}
DIAG_OK = {
    "hypotheses": [
        {
            "hypothesis": "traffic spike saturates the servers",
            "probability": 0.6,
            "reasoning": "arrival rate jumped",
            "evidence": ["swim/arrival.rate"],
        },
        {
            "hypothesis": "slow database",
            "probability": 0.9,
            "reasoning": "response time spike",
            "evidence": ["swim/average.response.time=900"],
        },
    ],
    "causal_chain": "db slow -> response time up",
    "confidence": 0.7,
    "explanation": "response time spiked while utilisation kept rising",
    "supporting_evidence": ["swim/average.response.time=900"],
}


def make_state(extra_series: int = 0) -> TwinState:
    st = TwinState()
    pts = []
    for i in range(60):
        t = T0 + i * 60.0
        pts.append(Point("swim", "server.utilization", t, 0.5 + 0.0066 * i, "ratio", None))
        pts.append(
            Point(
                "swim", "average.response.time", t, 200.0 + (i % 3) if i < 59 else 900.0, "ms", None
            )
        )
        pts.append(Point("swim", "arrival.rate", t, 50.0 + (i % 2), "rps", None))
        pts.append(Point("swim", "active.servers", t, 3.0, "count", None))
    for j in range(extra_series):
        pts += [
            Point(
                f"svc{j % 40}",
                f"noise.metric{j}",
                T0 + i * 60.0,
                1000.0 + j + 0.001 * i,
                "unknown",
                None,
            )
            for i in range(5)
        ]
    st.apply_points(pts)
    st.actions.append(
        ActionRecord(
            T0 + 50 * 60.0, "a1", "ADD_SERVER", "swim", "success", True, 2.0, "server 4 started"
        )
    )
    return st


def model(state: TwinState, chat: Any, **settings: Any) -> GeminiWorldModel:
    s = {"forecast_helper": "none", "backoff_base_sec": 0.01, "backoff_max_sec": 0.02} | settings
    return GeminiWorldModel(state, s, chat_model=chat)


async def started(m: GeminiWorldModel) -> GeminiWorldModel:
    await m.initialize()
    return m


# ---------------------------------------------------------------- grounding + mapping
async def test_query_prompt_is_grounded_and_answer_maps_to_proto() -> None:
    chat = recording(QUERY_OK)
    m = await started(model(make_state(), chat))
    res = await m.query(
        QueryRequest(
            "q1", "natural_language", "Is the server utilization too high?", {"system": "swim"}
        )
    )
    assert res.success, res.explanation
    prompt = chat.prompt_text()
    # latest values, trends, anomalies, actions - and the question
    assert "swim/server.utilization = 0.8894" in prompt
    assert "trend +0.0066/min" in prompt
    assert "swim/average.response.time = 900" in prompt and "ANOMALY" in prompt
    assert "current anomalies" in prompt
    assert "ADD_SERVER target=swim status=success ok: server 4 started" in prompt
    assert "Is the server utilization too high?" in prompt
    assert f"now: {iso(T0 + 59 * 60.0)}" in prompt
    # no raw history: an early sample value does not appear
    assert "0.5066" not in prompt and "0.5132" not in prompt
    # the JSON schema of the answer is part of the system message
    assert '"referenced_metrics"' in prompt

    pb = mapping.from_query("q1", res)
    assert pb.success and pb.query_id == "q1"
    assert json.loads(pb.result)["answer"].startswith("Server utilization is 0.89")
    assert pb.confidence == pytest.approx(0.8)
    assert pb.explanation == QUERY_OK["answer"]
    assert pb.metadata["grounding_series"] == "4"
    assert pb.metadata["llm_attempts"] == "1"


async def test_store_queries_do_not_call_the_llm() -> None:
    chat = recording()
    m = await started(model(make_state(), chat))
    res = await m.query(
        QueryRequest("q", "current_state", "", {"system": "swim", "metric": "active.servers"})
    )
    assert res.success and res.result["systems"]["swim"]["active.servers"]["value"] == 3.0
    assert chat.calls == []


async def test_simulation_maps_to_proto_with_times_from_event_time() -> None:
    chat = recording(SIM_OK)
    m = await started(model(make_state(), chat))
    req = SimulationRequest("s1", "what_if", [Action("ADD_SERVER", "swim", {"count": "1"})], 30)
    res = await m.simulate(req)
    assert res.success, res.explanation
    prompt = chat.prompt_text()
    assert '"action_type": "ADD_SERVER"' in prompt and "horizon of 30 minutes" in prompt
    pb = mapping.from_simulation("s1", res, 0.01)
    assert [s.timestamp for s in pb.future_states] == [
        iso(NOW + 15 * 60.0),
        iso(NOW + 30 * 60.0),
    ]  # sorted
    assert dict(pb.future_states[0].metrics) == {
        "server.utilization": pytest.approx(0.66),
        "average.response.time": 210.0,
    }
    assert pb.future_states[0].confidence == pytest.approx(0.8)
    assert pb.confidence == pytest.approx(0.75)
    assert (pb.uncertainty_lower, pb.uncertainty_upper) == (pytest.approx(0.6), pytest.approx(0.85))
    assert pb.impact_estimates.performance_impact == 25.0
    assert pb.impact_estimates.impact_description == "one more server"
    assert pb.metrics.average_confidence == pytest.approx(0.75)


async def test_diagnosis_probabilities_normalised_and_ranked() -> None:
    chat = recording(DIAG_OK)
    m = await started(model(make_state(), chat))
    res = await m.diagnose(
        DiagnosisRequest("d1", "response time spike", T0 + 59 * 60.0, {"system": "swim"})
    )
    assert res.success, res.explanation
    assert "response time spike" in chat.prompt_text()
    pb = mapping.from_diagnosis("d1", res)
    probs = [h.probability for h in pb.hypotheses]
    assert probs == [pytest.approx(0.6), pytest.approx(0.4)]  # 0.9 and 0.6 rescaled by 1.5
    assert sum(probs) == pytest.approx(1.0)
    assert [h.rank for h in pb.hypotheses] == [1, 2]
    assert pb.hypotheses[0].hypothesis == "slow database"
    assert list(pb.hypotheses[0].evidence) == ["swim/average.response.time=900"]
    assert pb.causal_chain == "db slow -> response time up"


async def test_forecasts_from_the_statistical_layer_are_in_the_prompt() -> None:
    asked: list[tuple[Any, ...]] = []

    async def forecaster(system: str | None, horizon: int, now: float | None) -> SimulationResult:
        asked.append((system, horizon))
        return SimulationResult(
            True, [PredictedState(NOW + 600.0, {"server.utilization": 0.9512}, 0.7)], 0.7
        )

    chat = recording(SIM_OK)
    m = GeminiWorldModel(
        make_state(), {"forecast_helper": "none"}, chat_model=chat, forecaster=forecaster
    )
    await m.initialize()
    res = await m.simulate(SimulationRequest("s", "forecast", [], 30, {"system": "swim"}))
    assert res.success
    assert asked == [("swim", 30)]
    prompt = chat.prompt_text()
    assert "forecast (statistical model):" in prompt and "server.utilization=0.9512" in prompt
    assert res.metadata["grounding_forecast"] == "true"


async def test_grounding_is_bounded_with_many_series() -> None:
    chat = recording(QUERY_OK)
    m = await started(
        model(make_state(extra_series=800), chat, grounding={"max_series": 10, "max_chars": 2500})
    )
    res = await m.query(QueryRequest("q", "natural_language", "how is server utilization?"))
    assert res.success
    human = str(chat.calls[0][1].content)
    grounded = human.split("\n\n")[0]
    assert len(grounded) <= 2500 + 100
    assert grounded.count("\n- svc") <= 10
    assert "swim/server.utilization" in grounded  # the relevant series wins
    assert res.metadata["grounding_series_total"] == str(4 + 800)
    assert res.metadata["grounding_series"] == "10"


# ---------------------------------------------------------------- invalid answers
async def test_malformed_answer_is_retried_once_with_the_error_fed_back() -> None:
    chat = recording("Sure! Here is my forecast: the system will be fine.", SIM_OK)
    m = await started(model(make_state(), chat))
    res = await m.simulate(SimulationRequest("s", "forecast", [], 30))
    assert res.success, res.explanation
    assert len(chat.calls) == 2
    repair = chat.calls[1]
    assert "Sure! Here is my forecast" in str(repair[-2].content)  # the bad reply, as the AI turn
    assert "could not be used" in str(repair[-1].content) and "not a JSON object" in str(
        repair[-1].content
    )
    assert res.metadata["llm_parse_attempts"] == "2"
    assert m.metrics()["llm_parse_repairs_total"] == 1.0


async def test_invalid_twice_is_reported_in_band_never_passed_through() -> None:
    bad_prob = {"hypotheses": [{"hypothesis": "x", "probability": 1.7}], "confidence": 0.5}
    chat = recording("```json\n{\"hypotheses\": []}\n```", bad_prob)
    m = await started(model(make_state(), chat))
    res = await m.diagnose(DiagnosisRequest("d", "spike"))
    assert not res.success and res.hypotheses == []
    assert len(chat.calls) == 2
    assert "no valid diagnosis answer after 2 attempt(s)" in res.explanation
    assert "hypotheses.0.probability" in res.explanation
    pb = mapping.from_diagnosis("d", res)
    assert not pb.success and len(pb.hypotheses) == 0
    assert pb.metadata["failure"] == "invalid_answer"
    assert m.metrics()["llm_invalid_answers_total"] == 1.0


async def test_state_beyond_horizon_and_nan_are_rejected() -> None:
    beyond = json.loads(json.dumps(SIM_OK))
    beyond["future_states"][0]["minutes_ahead"] = 999
    chat = recording(
        '{"future_states": [{"minutes_ahead": 5, "metrics": {"x": NaN}, "confidence": 0.5}], '
        '"confidence": 0.5}',
        beyond,
    )
    m = await started(model(make_state(), chat))
    res = await m.simulate(SimulationRequest("s", "forecast", [], 30))
    assert not res.success
    assert "beyond the horizon of 30 minutes" in res.explanation
    assert "NaN is not a finite number" in str(chat.calls[1][-1].content)


# ---------------------------------------------------------------- timeouts, retries, limits
async def test_slow_answer_times_out_in_band() -> None:
    chat = ScriptedChatModel(steps=[QUERY_OK], delay=5.0)
    m = await started(
        model(make_state(), chat, call_timeout_sec=0.2, request_timeout_sec=0.3, max_retries=0)
    )
    t0 = time.perf_counter()
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert time.perf_counter() - t0 < 2.0
    assert not res.success and "timed out after 0.2s" in res.explanation
    assert res.metadata["failure"] == "timeout"
    assert m.metrics()["llm_timeouts_total"] == 1.0


async def test_transient_errors_are_retried_with_backoff() -> None:
    chat = ScriptedChatModel(
        steps=[HttpError(503, "overloaded"), ModelRateLimitError("429 quota"), QUERY_OK]
    )
    m = await started(model(make_state(), chat))
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert res.success, res.explanation
    assert chat.calls == 3
    assert res.metadata["llm_attempts"] == "3"
    assert m.metrics()["llm_retries_total"] == 2.0


async def test_permanent_errors_are_not_retried() -> None:
    chat = ScriptedChatModel(steps=[ModelAuthenticationError("API key not valid"), QUERY_OK])
    m = await started(model(make_state(), chat))
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert not res.success and chat.calls == 1
    assert (
        "failed permanently (not retried)" in res.explanation
        and "API key not valid" in res.explanation
    )


async def test_retries_give_up_after_max_retries() -> None:
    chat = ScriptedChatModel(steps=[HttpError(500), HttpError(502), HttpError(503), QUERY_OK])
    m = await started(model(make_state(), chat, max_retries=2))
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert not res.success and chat.calls == 3
    assert "after 3 attempt(s)" in res.explanation


def test_error_classification() -> None:
    assert is_transient(TimeoutError())
    assert is_transient(HttpError(429)) and is_transient(HttpError(503))
    assert not is_transient(HttpError(400)) and not is_transient(HttpError(403))
    assert is_transient(ModelRateLimitError("x")) and not is_transient(
        ModelAuthenticationError("x")
    )
    assert not is_transient(ValueError("bad"))
    assert is_transient(ConnectionResetError())


async def test_concurrency_is_limited() -> None:
    chat = ScriptedChatModel(steps=[QUERY_OK] * 4, delay=0.05)
    m = await started(model(make_state(), chat, max_concurrency=2))
    results = await asyncio.gather(
        *(m.query(QueryRequest(f"q{i}", "natural_language", "status?")) for i in range(4))
    )
    assert all(r.success for r in results)
    assert chat.max_active == 2


async def test_request_budget_exceeded_is_in_band() -> None:
    chat = recording(QUERY_OK, QUERY_OK, QUERY_OK)
    m = await started(model(make_state(), chat, requests_per_minute=2, budget_max_wait_sec=0))
    for _ in range(2):
        assert (await m.query(QueryRequest("q", "natural_language", "status?"))).success
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert not res.success
    assert (
        "request budget of 2 requests/minute (settings.requests_per_minute) exhausted; retry in"
        in res.explanation
    )
    assert res.metadata["failure"] == "budget"
    assert len(chat.calls) == 2
    assert m.metrics()["llm_budget_rejections_total"] == 1.0


async def test_token_budget_exceeded_is_in_band() -> None:
    chat = recording(QUERY_OK)
    m = await started(model(make_state(), chat, tokens_per_minute=500, max_output_tokens=256))
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert not res.success and "token budget of 500 tokens/minute" in res.explanation
    assert chat.calls == []


async def test_budget_waits_when_the_slot_frees_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_mod, "WINDOW_SEC", 0.3)
    b = budget_mod.RateBudget(requests_per_minute=1, max_wait_sec=1.0)
    await b.reserve(10)
    t0 = time.perf_counter()
    await b.reserve(10)
    assert 0.2 < time.perf_counter() - t0 < 0.9
    assert b.waits == 1
    b2 = budget_mod.RateBudget(requests_per_minute=1, max_wait_sec=0.05)
    await b2.reserve(10)
    with pytest.raises(budget_mod.BudgetExceeded):
        await b2.reserve(10)


async def test_token_usage_and_latency_reach_get_metrics() -> None:
    from twin.runtime import TwinRuntime

    from support import twin_config

    reply = AIMessage(
        content=json.dumps(QUERY_OK),
        usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
    )
    rt = TwinRuntime(twin_config(None))
    rt.model = model(rt.state, recording(reply, QUERY_OK))
    await rt.initialize()
    await rt.model.query(QueryRequest("q", "natural_language", "status?"))
    await rt.model.query(QueryRequest("q", "natural_language", "status?"))  # no usage: estimated
    snap = rt.metrics_snapshot()
    assert snap["model.llm_requests_total"] == 2.0
    assert snap["model.llm_input_tokens_total"] > 120  # 120 reported + an estimate
    assert snap["model.llm_estimated_token_calls_total"] == 1.0
    assert snap["model.llm_latency_last_ms"] > 0
    assert snap["model.llm_budget_requests_used"] == 2.0


# ---------------------------------------------------------------- keys and providers
def test_validate_settings_names_the_missing_key() -> None:
    errors = GeminiWorldModel.validate_settings({}, {})
    assert any("GEMINI_API_KEY" in e for e in errors)
    assert GeminiWorldModel.validate_settings({}, {"GEMINI_API_KEY": "k"}) == []
    assert GeminiWorldModel.validate_settings({}, {"GOOGLE_API_KEY": "k"}) == []
    bad = GeminiWorldModel.validate_settings(
        {"call_timeout_sec": 30, "request_timeout_sec": 10}, {"GEMINI_API_KEY": "k"}
    )
    assert bad == ["settings.call_timeout_sec: must not exceed settings.request_timeout_sec"]


def test_cli_validate_only_fails_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from twin import cli

    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["--validate-only", "--world-model", "gemini"]) == 2
    assert "GEMINI_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-used")
    assert cli.main(["--validate-only", "--world-model", "gemini"]) == 0


async def test_running_without_key_is_unhealthy_and_answers_in_band(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twin.runtime import TwinRuntime

    from support import twin_config

    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    rt = TwinRuntime(
        twin_config(
            None, world_model={"implementation": "gemini", "settings": {"forecast_helper": "none"}}
        )
    )
    await rt.initialize()
    rt.ingest_points([Point("swim", "dimmer", T0, 1.0, "ratio", None)])
    h = await rt.health()
    assert h.status == "unhealthy" and any("GEMINI_API_KEY" in i for i in h.issues)
    res = await rt.model.query(QueryRequest("q", "natural_language", "status?"))
    assert not res.success and "GEMINI_API_KEY" in res.explanation
    sim = await rt.model.simulate(SimulationRequest("s", "forecast", [], 10))
    assert not sim.success and "GEMINI_API_KEY" in sim.explanation
    assert (
        await rt.model.query(QueryRequest("q", "current_state"))
    ).success  # the store still answers
    assert rt.metrics_snapshot()["model.llm_available"] == 0.0
    await rt.shutdown()


async def test_with_key_builds_chat_google_generative_ai_without_calling_it() -> None:
    from langchain_google_genai import ChatGoogleGenerativeAI

    m = GeminiWorldModel(
        TwinState(),
        {"model_name": "gemini-2.5-flash-lite", "forecast_helper": "none", "call_timeout_sec": 7},
        environ={"GEMINI_API_KEY": "test-key"},
    )
    await m.initialize()
    assert (await m.health()).status == "healthy"
    chat = m.runner.chat_model
    assert isinstance(chat, ChatGoogleGenerativeAI)
    assert (
        chat.model.endswith("gemini-2.5-flash-lite") and chat.max_retries == 0 and chat.timeout == 7
    )


async def test_any_langchain_chat_model_by_dotted_class() -> None:
    settings = {
        "forecast_helper": "none",
        "chat_model_class": "langchain_core.language_models.fake_chat_models:FakeListChatModel",
        "chat_model_kwargs": {"responses": [json.dumps(QUERY_OK)]},
    }
    assert GeminiWorldModel.validate_settings(settings, {}) == []
    m = GeminiWorldModel(make_state(), settings, environ={})
    await m.initialize()
    res = await m.query(QueryRequest("q", "natural_language", "status?"))
    assert res.success and res.result["answer"] == QUERY_OK["answer"]


async def test_openai_provider_is_reported_when_unavailable() -> None:
    settings = {
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "forecast_helper": "none",
    }
    errors = GeminiWorldModel.validate_settings(settings, {})
    try:
        import langchain_openai  # noqa: F401
    except ImportError:
        assert any("langchain-openai" in e for e in errors)
        m = GeminiWorldModel(TwinState(), settings, environ={})
        await m.initialize()
        h = await m.health()
        assert h.status == "unhealthy" and "langchain-openai" in h.issues[0]
    else:  # pragma: no cover - depends on the environment
        assert errors == []


async def test_factory_hook_and_reload_keep_working() -> None:
    made: list[dict[str, Any]] = []

    def factory(settings: Any) -> RecordingChatModel:
        made.append(dict(settings))
        return recording(QUERY_OK)

    m = GeminiWorldModel(make_state(), {"forecast_helper": "none"}, chat_model_factory=factory)
    await m.initialize()
    assert (await m.query(QueryRequest("q", "natural_language", "a?"))).success
    await m.reload({"forecast_helper": "none", "temperature": 0.0})
    assert made[-1]["temperature"] == 0.0 and len(made) == 2
    assert (await m.query(QueryRequest("q", "natural_language", "b?"))).success
    assert math.isfinite(m.metrics()["llm_latency_avg_ms"])
    assert orjson.dumps(m.metrics())
