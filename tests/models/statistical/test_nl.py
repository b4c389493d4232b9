"""Natural-language questions without an LLM, answered from the store (event time)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twin.core.errors import InvalidRequest
from twin.core.events import Point, iso
from twin.models.base import QueryRequest

from stat_support import feed, loadgen_points, runtime

START = datetime(2023, 11, 15, 8, 0, tzinfo=UTC).timestamp()  # data 08:00 .. ~10:46 UTC


@pytest.fixture
async def rt():
    r = await runtime()
    feed(r, loadgen_points(2000, start=START))
    try:
        yield r
    finally:
        await r.shutdown()


async def ask(rt, text: str, **params: str):
    return await rt.model.query(QueryRequest("q", "natural_language", text, dict(params)))


async def test_current_value_with_system_and_synonym(rt) -> None:
    res = await ask(rt, "current CPU usage of web_cluster")
    assert res.success
    (m,) = res.result["matches"]
    s = rt.state.store.get("web_cluster", "cpu.usage")
    assert (m["system"], m["metric"], m["value"]) == ("web_cluster", "cpu.usage", s.last_v)
    assert "web_cluster/cpu.usage" in res.explanation
    # "cpu" of a system that has no cpu series resolves to its utilisation.
    res = await ask(rt, "what is the cpu of swim right now?")
    assert res.success and res.result["matches"][0]["metric"] == "server.utilization"


async def test_relative_time_resolves_against_the_newest_event_time(rt) -> None:
    res = await ask(rt, "response time 10 minutes ago")
    assert res.success
    newest = rt.state.store.newest_time
    (m,) = res.result["matches"]  # exact name wins over average/basic/optional.response.time
    assert (m["system"], m["metric"]) == ("web_cluster", "response.time")
    s = rt.state.store.get("web_cluster", "response.time")
    t, v = s.value_at(newest - 600)
    assert m["value"] == v and m["timestamp"] == iso(t) and m["requested_time"] == iso(newest - 600)
    assert iso(newest - 600) in res.explanation  # event time, not the wall clock (2023 data)


async def test_clock_time_of_the_newest_day(rt) -> None:
    res = await ask(rt, "what was the arrival rate at 10:00")
    assert res.success
    (m,) = res.result["matches"]
    assert m["metric"] == "arrival.rate" and m["requested_time"] == "2023-11-15T10:00:00Z"
    assert m["value"] == rt.state.store.get("swim", "arrival.rate").value_at(START + 7200)[1]
    res = await ask(rt, "latency of swim at 9am")
    assert res.success and {x["metric"] for x in res.result["matches"]} == {
        "average.response.time",
        "basic.response.time",
        "optional.response.time",
    }
    assert res.result["matches"][0]["requested_time"] == "2023-11-15T09:00:00Z"


async def test_anomaly_questions(rt) -> None:
    res = await ask(rt, "is anything anomalous?")
    assert res.success and res.result["anomalies"] == [] and "nothing" in res.explanation
    s = rt.state.store.get("web_cluster", "memory.usage")
    rt.ingest_points([Point("web_cluster", "memory.usage", s.last_t + 5, 500.0, "percent", None)])
    res = await ask(rt, "Is anything unusual in web cluster?")
    assert res.success and [(a["system"], a["metric"]) for a in res.result["anomalies"]] == [
        ("web_cluster", "memory.usage")
    ]
    assert "web_cluster/memory.usage" in res.explanation


async def test_windows_and_forecasts(rt) -> None:
    res = await ask(rt, "max request rate over the last 30 minutes")
    assert res.success
    (m,) = res.result["matches"]
    s = rt.state.store.get("web_cluster", "request.rate")
    _, v = s.window(s.last_t - 1800, s.last_t)
    assert (
        m["aggregate"] == "max"
        and m["value"] == pytest.approx(v.max())
        and m["samples"] == v.shape[0]
    )
    res = await ask(rt, "what will the arrival rate be in 30 minutes?")
    assert res.success and res.metadata["intent"] == "forecast"
    (m,) = res.result["matches"]
    assert m["lower"] <= m["value"] <= m["upper"]


async def test_questions_not_understood_say_what_is_known(rt) -> None:
    res = await ask(rt, "how is the weather in Paris?")
    assert not res.success and "did not understand" in res.explanation
    assert (
        "swim" in res.explanation
        and "arrival.rate" in res.explanation
        and "e.g." in res.explanation
    )
    res = await ask(rt, "cpu usage", system="mars")
    assert not res.success and "unknown system 'mars'" in res.explanation
    res = await ask(rt, "arrival rate 3 days ago")
    assert not res.success and "no samples" in res.explanation
    with pytest.raises(InvalidRequest):
        await ask(rt, "   ")


async def test_empty_twin() -> None:
    r = await runtime()
    try:
        res = await ask(r, "current cpu usage")
        assert not res.success and "no telemetry" in res.explanation
    finally:
        await r.shutdown()


async def test_percentiles_spelling_and_numbered_series(rt) -> None:
    res = await ask(rt, "p99 latency")
    assert res.success and "last 60 minutes" in res.explanation
    (m,) = res.result["matches"]
    s = rt.state.store.get("web_cluster", "response.time")
    _, v = s.window(s.last_t - 3600, s.last_t)
    assert m["aggregate"] == "p99" and m["value"] == pytest.approx(
        float(__import__("numpy").percentile(v, 99))
    )
    res = await ask(rt, "what is the utilisation")
    assert res.success and res.result["matches"][0]["metric"] == "server.utilization"
    res = await ask(rt, "utilization of server 2")
    assert res.success and [m["metric"] for m in res.result["matches"]] == ["utilization.server.2"]
