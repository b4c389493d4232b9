"""``polaris-twin verify --target`` against running twins (real gRPC, real nats-server).

It passes against a ``statistical`` twin and a ``hybrid`` one (statistical, mock, and
gemini on a fake LangChain chat model), the answers it asked for land in the prediction
ledger, and a failed step prints the twin's reason.
"""

from __future__ import annotations

import argparse
import json

import pytest

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.tools.verify import run

CHECKS = 8
WHAT_IF_REPLY = {
    "future_states": [
        {
            "minutes_ahead": m,
            "metrics": {"response_time": 180.0, "cpu_usage": 40.0, "arrival_rate": 30.0},
            "confidence": 0.7,
        }
        for m in (5, 10, 15, 20, 25, 30)
    ],
    "confidence": 0.7,
    "impact": {
        "cost_impact": 2.0,
        "performance_impact": 20.0,
        "reliability_impact": 0.2,
        "description": "two more servers",
    },
    "explanation": "load spreads over more servers",
}
HYBRID = {
    "members": ["statistical", "gemini", "mock"],
    "gemini": {
        "chat_model_class": "langchain_core.language_models.fake_chat_models:FakeListChatModel",
        "chat_model_kwargs": {"responses": [json.dumps(WHAT_IF_REPLY)]},
        "forecast_helper": "none",
    },
}


async def verify(app, nats_url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    args = argparse.Namespace(target=f"127.0.0.1:{app.grpc_port}", nats_url=nats_url)
    code = await run(args)
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("model", "settings"), [("statistical", {}), ("hybrid", HYBRID)], ids=["statistical", "hybrid"]
)
async def test_verify_target_passes_and_its_answers_are_in_the_ledger(
    nats_server, make_twin, channel_for, capsys, model: str, settings: dict
) -> None:
    app = await make_twin(nats_server.url, model, world_model={"settings": settings})
    code, out = await verify(app, nats_server.url, capsys)
    assert code == 0, out
    assert out.count("PASS  ") == CHECKS and "FAIL" not in out and "ALL CHECKS PASSED" in out
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    m = (await stub.Manage(pb.ManagementRequest(operation="get_metrics"), timeout=10)).metrics
    # The what-if (a traffic_spike scenario: recorded, never scored) and the compare's
    # three plan outcomes, recorded under the model that answered.
    assert m["predictions_recorded_total"] == "4", dict(m)
    assert m["predictions_unscorable_total"] == "1"
    plans = [k for k in m if k.startswith("predictions_recorded_total.") and k.endswith(".plan")]
    assert len(plans) == 1 and f".{model}.plan" in plans[0] and m[plans[0]] == "3"


async def test_a_failed_step_prints_the_twins_reason(
    nats_server, make_twin, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    app = await make_twin(
        nats_server.url, "gemini", world_model={"settings": {"forecast_helper": "none"}}
    )
    code, out = await verify(app, nats_server.url, capsys)
    assert code == 1 and "SOME CHECKS FAILED" in out
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("FAIL  Simulate what_if"))
    assert lines[i + 1].strip().startswith("why: ") and "GEMINI_API_KEY" in lines[i + 1], out
