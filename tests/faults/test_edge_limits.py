"""Issue 17 defects 1, 2, 3 and 9, each through a real nats-server and a real twin,
with exact counts (applied; dead-lettered, by reason) and a healthy twin afterwards.

1. extreme event timestamps are dead-lettered (reason ``timestamp``); extreme request
   times get INVALID_ARGUMENT; nothing accepted breaks a later query;
2. a cap on series, total and per system, with a counter and a health issue;
3. memory bounds that bound: length limits, payload depth/size, byte-bounded action
   log, chunk sizes that follow ``max_points_per_series``;
9. a batch with one NaN literal or one absurdly deep event keeps its good neighbours.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import nats
import orjson
import pytest
from faults.js_harness import manage, metrics
from fuzz.fuzz_strategies import deep

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

from support import wait_for

STREAM = "polaris.telemetry.events.stream"
BATCH = "polaris.telemetry.events.batch"
EXEC = "polaris.execution.results"
CAL = "polaris.digitaltwin.calibrate"
ERRORS = "polaris.digitaltwin.errors"
TS = "2024-03-01T00:00:00Z"


async def _dead_letters(nc: nats.NATS) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def cb(msg: Any) -> None:
        got.append(orjson.loads(msg.data))

    await nc.subscribe(ERRORS, cb=cb)
    await nc.flush()
    return got


async def _settle(app: Any, received: int, dead: list[dict[str, Any]], n_dead: int) -> None:
    stats = app.runtime.ingest_stats
    await wait_for(
        lambda: (
            stats.events_received >= received
            and len(dead) >= n_dead
            and app.ingestor.queue.qsize() == 0
        )
    )
    await asyncio.sleep(0.3)  # nothing more may arrive


def _ev(name: str, value: Any = 1.0, source: str = "edge", **kw: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "source": source, "timestamp": TS, **kw}


async def _healthy(ch: grpc.aio.Channel) -> None:
    h = await manage(ch, "health_check")
    assert h.success and h.health_status.status == "healthy", list(h.health_status.issues)


# ----------------------------------------------------------------- defect 1
async def test_extreme_timestamps_are_dead_lettered_and_queries_keep_working(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await make_twin(nats_server.url)
    ch = channel_for(app)
    dead = await _dead_letters(nc)
    good = [
        _ev("cpu", 1.0),
        _ev("cpu", 2.0, timestamp="2014-02-19T10:50:00Z"),  # NAB-era replay: accepted
        _ev("cpu", 3.0, timestamp=1_392_807_000.0),
        _ev("mem", 4.0, timestamp=None),  # receive time
        _ev("mem", 5.0, timestamp=time.time() + 3600),  # an hour ahead: within the day
        _ev("mem", 6.0, timestamp=0.0),  # 1970-01-01 itself
    ]
    bad = [
        _ev("cpu", 9.0, timestamp="9999-12-31T00:00:00Z"),
        _ev("cpu", 9.0, timestamp=1.7e12),  # epoch milliseconds
        _ev("cpu", 9.0, timestamp=1e18),
        _ev("cpu", 9.0, timestamp=-1e11),
        _ev("mem", 9.0, timestamp=time.time() + 3 * 86400),  # three days ahead
    ]
    for e in good:
        if e["timestamp"] is None:
            del e["timestamp"]
    events = [x for pair in zip(good, bad) for x in pair] + good[len(bad) :]
    await nc.publish(BATCH, orjson.dumps({"events": events}))
    await nc.publish(STREAM, orjson.dumps(_ev("other", 1.0, source="elsewhere", timestamp=9e15)))
    await nc.publish(STREAM, orjson.dumps(_ev("other", 1.0, source="elsewhere")))
    await nc.flush()
    await _settle(app, len(events) + 2, dead, len(bad) + 1)
    m = await metrics(ch)
    assert m["events_applied_total"] == len(good) + 1
    assert m["dead_lettered_total"] == len(bad) + 1 == len(dead)
    assert m["dead_lettered_total.timestamp"] == len(bad) + 1
    assert sorted(d["index"] for d in dead if "index" in d) == [1, 3, 5, 7, 9]
    assert all("outside the accepted window" in d["reason"] for d in dead)
    stub = pb_grpc.DigitalTwinStub(ch)
    for params in ({}, {"system": "edge"}, {"system": "edge", "metric": "cpu"}):
        r = await stub.Query(pb.QueryRequest(query_type="current_state", parameters=params))
        assert r.success, r.explanation
    r = await stub.Query(
        pb.QueryRequest(
            query_type="historical", parameters={"system": "edge", "metric": "cpu", "start": "0"}
        )
    )
    assert r.success and orjson.loads(r.result)["systems"]["edge"]["cpu"]["samples"] == 3
    # Request times are held to the same window: INVALID_ARGUMENT, not an internal error.
    for req in (
        pb.QueryRequest(query_type="current_state", timestamp="1e300"),
        pb.QueryRequest(query_type="historical", parameters={"metric": "cpu", "at": "1e300"}),
        pb.QueryRequest(query_type="historical", parameters={"metric": "cpu", "start": "-1e11"}),
        pb.QueryRequest(
            query_type="historical", parameters={"metric": "cpu", "end": "9999-12-31T00:00:00Z"}
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Query(req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "outside the accepted window" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Simulate(
            pb.SimulationRequest(
                simulation_type="forecast",
                timestamp="1e300",
                parameters={"system": "edge", "metric": "cpu"},
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await _healthy(ch)


async def test_the_time_window_is_a_setting(nats_server, nc, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, limits={"min_event_time": 1_600_000_000, "max_event_time_ahead_sec": 0}
    )
    ch = channel_for(app)
    dead = await _dead_letters(nc)
    events = [_ev("a", timestamp=1_500_000_000.0), _ev("a"), _ev("a", timestamp=time.time() + 600)]
    await nc.publish(BATCH, orjson.dumps({"events": events}))
    await nc.flush()
    await _settle(app, 3, dead, 2)
    m = await metrics(ch)
    assert (m["events_applied_total"], m["dead_lettered_total.timestamp"]) == (1, 2)
    assert [d["index"] for d in dead] == [0, 2]


# ----------------------------------------------------------------- defect 2
async def test_series_cap_total_and_per_system(nats_server, nc, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, state={"max_series": 5, "max_series_per_system": 3})
    ch = channel_for(app)
    dead = await _dead_letters(nc)
    first = [_ev(f"m{i}", source="a") for i in range(5)]  # a/m3, a/m4 refused: 3 per system
    first += [_ev(f"m{i}", source="b") for i in range(3)]  # b/m2 refused: 5 in total
    await nc.publish(BATCH, orjson.dumps({"events": first}))
    await nc.flush()
    await _settle(app, len(first), dead, 3)
    # Existing series keep taking points; refused ones stay refused.
    again = [
        _ev("m0", 2.0, source="a"),
        _ev("m1", 2.0, source="b"),
        _ev("m4", 2.0, source="a"),
        _ev("x", 1.0, source="c"),
    ]
    for e in again:
        await nc.publish(STREAM, orjson.dumps(e))
    await nc.flush()
    await _settle(app, len(first) + len(again), dead, 5)
    m = await metrics(ch)
    assert m["events_applied_total"] == 5 + 2
    assert m["series"] == 5
    assert m["dead_lettered_total"] == m["dead_lettered_total.series_limit"] == 5 == len(dead)
    assert m["series_rejected_total"] == 4  # a/m3, a/m4, b/m2, c/x
    assert m["series_rejected_events_total"] == 5
    reasons = sorted(d["reason"] for d in dead)
    assert sum("max_series_per_system 3 reached for a" in r for r in reasons) == 2  # a/m3, a/m4
    assert sum("state.max_series 5 reached" in r for r in reasons) == 3  # b/m2, then a/m4 and c/x
    assert {
        (orjson.loads(d["payload"])["source"], orjson.loads(d["payload"])["name"]) for d in dead
    } == {("a", "m3"), ("a", "m4"), ("b", "m2"), ("c", "x")}
    assert {d["subject"] for d in dead} == {BATCH, STREAM}
    h = (await manage(ch, "health_check")).health_status
    assert h.status == "degraded"
    assert any("series cap reached" in i for i in h.issues) and any(
        "max_series_per_system" in i for i in h.issues
    )
    stub = pb_grpc.DigitalTwinStub(ch)
    assert (await stub.Query(pb.QueryRequest(query_type="current_state"))).success
    assert (await manage(ch, "reset_state")).success
    await _healthy(ch)
    assert (await metrics(ch))["series_rejected_total"] == 4  # a counter: kept across reset


# ----------------------------------------------------------------- defect 3
async def test_length_limits_and_action_payloads_are_refused_at_ingest(
    nats_server, nc, make_twin, channel_for, tmp_path
) -> None:
    app = await make_twin(
        nats_server.url, state={"snapshot_dir": str(tmp_path), "snapshot_interval_sec": 0}
    )
    ch = channel_for(app)
    dead = await _dead_letters(nc)
    bad = [
        _ev("u", unit="x" * 65),
        _ev("t", value="y" * 1025),
        _ev("g", tags={f"k{i}": "v" for i in range(33)}),
        _ev("g", tags={"k": "v" * 257}),
        _ev("n" * 257),
        _ev("s", source="s" * 257),
    ]
    good = [
        _ev("u", unit="x" * 64),
        _ev("t", value="y" * 1024),
        _ev("g", tags={f"k{i}": "v" * 256 for i in range(32)}),
    ]
    await nc.publish(BATCH, orjson.dumps({"events": bad + good}))
    execs = [
        {
            "action_id": "deep",
            "status": "success",
            "output": json.loads(deep(600, b'{"a":', b"}").replace(b'{"a":}', b'{"a":1}')),
        },
        {
            "action_id": "deep33",
            "status": "success",
            "metadata": {"m": json.loads(deep(31, b"[", b"]"))},
        },  # 33 levels
        {"action_id": "big", "status": "success", "message": "m" * 70_000},
        {"action_id": "long", "status": "success", "message": "m" * 1025},
        {"action_id": "late", "status": "success", "finished_at": 1e12},
        {
            "action_id": "ok",
            "status": "success",
            "output": {"a": {"b": [1, 2, 3]}},
            "message": "fine",
        },
    ]
    for e in execs:
        await nc.publish(EXEC, json.dumps(e).encode())
    cals = [
        {
            "prediction_id": "p",
            "predicted_outcome": {"x": json.loads(deep(40, b"[", b"]"))},
            "actual_outcome": {"value": 1},
        },
        {"prediction_id": "p", "predicted_outcome": {"value": 1}, "actual_outcome": {"value": 2}},
    ]
    for c in cals:
        await nc.publish(CAL, orjson.dumps(c))
    await nc.flush()
    n_dead = len(bad) + 5 + 1
    await _settle(app, len(bad) + len(good) + len(execs) + len(cals), dead, n_dead)
    m = await metrics(ch)
    assert m["events_applied_total"] == len(good) + 1 + 1
    assert m["dead_lettered_total"] == n_dead == len(dead)
    assert m["dead_lettered_total.too_long"] == 6 + 1  # 6 telemetry + the long message
    assert m["dead_lettered_total.too_deep"] == 3
    assert m["dead_lettered_total.oversize"] == 1
    assert m["dead_lettered_total.timestamp"] == 1
    assert [a.action_id for a in app.runtime.state.actions] == ["ok"]
    snap = await manage(ch, "snapshot")  # the 600-deep result never got in: snapshots work
    assert snap.success, snap.result
    await _healthy(ch)


async def test_action_log_is_bounded_in_bytes(nats_server, nc, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, state={"action_log_max_bytes": 200_000})
    ch = channel_for(app)
    for i in range(60):
        await nc.publish(
            EXEC,
            orjson.dumps(
                {"action_id": f"a{i}", "status": "success", "output": {"blob": "z" * 60_000}}
            ),
        )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.executions_applied == 60)
    log = app.runtime.state.actions
    assert log.nbytes <= 200_000 and len(log) == 3  # 3 x ~60 kB fit, the 57 oldest were dropped
    assert [a.action_id for a in log] == ["a57", "a58", "a59"]
    assert (await metrics(ch))["action_log_bytes"] == log.nbytes
    await _healthy(ch)


# ----------------------------------------------------------------- defect 9
async def test_nan_literal_and_deep_event_keep_their_good_neighbours(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await make_twin(nats_server.url)
    ch = channel_for(app)
    dead = await _dead_letters(nc)
    good = [_ev(f"g{i}", float(i)) for i in range(8)]
    nan_batch = json.dumps(
        {"batch_id": "nan", "events": good[:4] + [_ev("bad", float("nan"))] + good[4:]}
    ).encode()
    assert b"NaN" in nan_batch  # what Python's json.dumps writes
    deep_event = b'{"name": "deep", "value": 1, "metadata": {"m": ' + deep(5000) + b"}}"
    deep_batch = (
        b'{"events": ['
        + b", ".join(
            [orjson.dumps(e) for e in good[:2]] + [deep_event] + [orjson.dumps(e) for e in good[2:]]
        )
        + b"]}"
    )
    inf_batch = (
        b'{"events": ['
        + b", ".join(
            [orjson.dumps(e) for e in good[:7]]
            + [b'{"name": "big", "value": 1e400}']
            + [orjson.dumps(good[7])]
        )
        + b"]}"
    )
    bare_nan = json.dumps(good + [_ev("bad", float("-inf"))]).encode()
    for payload in (nan_batch, deep_batch, inf_batch, bare_nan):
        await nc.publish(BATCH, payload)
    await nc.flush()
    await _settle(app, 4 * 9, dead, 4)
    m = await metrics(ch)
    assert m["events_applied_total"] == 4 * 8
    assert m["dead_lettered_total"] == 4 == len(dead)
    assert sorted(d["index"] for d in dead) == [2, 4, 7, 8]
    by_index = {d["index"]: d for d in dead}
    assert by_index[4]["payload"].startswith('{"name": "bad"') and "NaN" in by_index[4]["payload"]
    assert "nested too deeply" in by_index[2]["reason"]
    assert "out of range" in by_index[7]["reason"]
    await _healthy(ch)
    # A batch broken outside its events array is still one dead letter, as before.
    await nc.publish(BATCH, b'{"batch_timestamp": NaN, "events": [' + orjson.dumps(good[0]) + b"]}")
    await nc.flush()
    await _settle(app, 4 * 9 + 1, dead, 5)
    assert "index" not in dead[-1] and "invalid JSON" in dead[-1]["reason"]
    assert (await metrics(ch))["events_applied_total"] == 4 * 8
