"""The gemini and hybrid models behind the real gRPC service (embedded nats-server, port 0).

The chat model is a scripted fake named by ``settings.chat_model_class`` - the same
configuration path a user takes to plug in another LangChain chat model.
"""

from __future__ import annotations

import json

import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

ANSWER = {"answer": "all good", "confidence": 0.9, "facts": [], "referenced_metrics": []}


def settings(steps: list, delay: float = 0.0, **extra: object) -> dict:
    return {
        "chat_model_class": "llm_fakes:ScriptedChatModel",
        "chat_model_kwargs": {"steps": steps, "delay": delay},
        "forecast_helper": "none",
        **extra,
    }


async def test_query_and_timeout_over_grpc(make_twin, channel_for) -> None:  # type: ignore[no-untyped-def]
    app = await make_twin(
        None,
        "gemini",
        world_model={"settings": settings([ANSWER, ANSWER], delay=0.0)},
        performance={"query_timeout_sec": 2.0},
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    resp = await stub.Query(
        pb.QueryRequest(query_id="q1", query_type="natural_language", query_content="how are we?")
    )
    assert resp.success and json.loads(resp.result)["answer"] == "all good"
    assert resp.metadata["llm_attempts"] == "1"
    metrics = await stub.Manage(pb.ManagementRequest(operation="get_metrics"))
    assert float(metrics.metrics["model.llm_requests_total"]) == 1.0


async def test_slow_llm_answers_in_band_before_the_rpc_timeout(make_twin, channel_for) -> None:  # type: ignore[no-untyped-def]
    app = await make_twin(
        None,
        "gemini",
        world_model={
            "settings": settings(
                [ANSWER], delay=5.0, call_timeout_sec=0.3, request_timeout_sec=0.5, max_retries=0
            )
        },
        performance={"query_timeout_sec": 2.0},
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    resp = await stub.Query(
        pb.QueryRequest(query_id="q2", query_type="natural_language", query_content="status?"),
        timeout=10,
    )
    assert not resp.success
    assert "timed out after 0.3s (settings.call_timeout_sec)" in resp.explanation
    assert resp.metadata["failure"] == "timeout"


async def test_no_key_over_grpc(make_twin, channel_for, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    app = await make_twin(None, "gemini", world_model={"settings": {"forecast_helper": "none"}})
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    health = await stub.Manage(pb.ManagementRequest(operation="health_check"))
    assert health.health_status.status == "unhealthy" and not health.success
    assert any("GEMINI_API_KEY" in i for i in health.health_status.issues)
    resp = await stub.Diagnose(pb.DiagnosisRequest(diagnosis_id="d", anomaly_description="spike"))
    assert not resp.success and "GEMINI_API_KEY" in resp.explanation
