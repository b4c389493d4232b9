"""Pushed events: the bus itself, then Watch over gRPC, SSE at /v1/watch and NATS
``polaris.digitaltwin.events.<kind>`` against real ingestion with an injected anomaly."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import threading
import time
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.core.notify import ANOMALY_STARTED, HEALTH_CHANGED, EventBus, WatcherDropped, event_dict
from twin.ingest.nats_ingest import confirm_interest
from twin.service.watch import to_proto

from support import wait_for

STREAM = "polaris.telemetry.events.stream"


# ---------------------------------------------------------------------------- the bus
async def test_bus_filters_replays_and_bounds() -> None:
    bus = EventBus(history=5, queue_size=3)
    bus.publish("anomaly_started", "a", {"metric": "m"})
    bus.publish("health_changed", "", {"to": "degraded"})
    only_b = bus.subscribe(systems=["b"], kinds=["anomaly_started", "health_changed"])
    bus.publish("anomaly_started", "a", {})  # other system: filtered
    bus.publish("anomaly_cleared", "b", {})  # other kind: filtered
    bus.publish("anomaly_started", "b", {"metric": "x"})
    bus.publish("health_changed", "", {})  # twin-wide passes any system filter
    assert [(e.kind, e.system) for e in (only_b.get_nowait(), only_b.get_nowait())] == [
        ("anomaly_started", "b"),
        ("health_changed", ""),
    ]
    assert only_b.get_nowait() is None
    # history is bounded; replay gives what is retained after a sequence
    for i in range(10):
        bus.publish("drift", "s", {"i": i})
    assert len(bus.history) == 5 and bus.history[0].sequence == bus.last_sequence - 4
    replay = bus.subscribe(since=bus.last_sequence - 2, queue_size=10)
    assert [e.data["i"] for e in (replay.get_nowait(), replay.get_nowait())] == [8, 9]
    # a slow watcher is dropped with a reason, and leaves the bus
    slow = bus.subscribe()
    for _ in range(4):
        bus.publish("drift", "s", {})
    assert slow.dropped is not None and "slow watcher dropped" in slow.dropped
    with pytest.raises(WatcherDropped):
        await slow.get()
    assert slow not in bus._subs and bus.watchers_dropped_total == 1
    # a sink counts what it cannot hold instead
    sink = bus.subscribe(queue_size=2, overflow="count")
    for _ in range(5):
        bus.publish("drift", "s", {})
    assert sink.dropped is None and sink.discarded == 3 and sink.pending() == 2


async def test_publish_from_another_thread_lands_on_the_loop() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    t = threading.Thread(target=lambda: bus.publish("drift", "s", {"v": float("nan")}))
    t.start()
    t.join()
    ev = await asyncio.wait_for(sub.get(), 2)
    assert ev.kind == "drift" and ev.data == {"v": None}  # non-finite numbers become null


def test_event_json_is_the_proto_canonical_mapping() -> None:
    bus = EventBus()
    bus.publish(
        "anomaly_started",
        "swim",
        {"metric": "rt", "score": 0.99991, "value": 512.5, "tags": ["a"], "n": 3},
    )
    ev = bus.history[-1]
    canonical = json_format.MessageToDict(
        to_proto(ev), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert canonical == event_dict(ev)


# ---------------------------------------------------------------------------- helpers
def _normal(t0: float, n: int, rng: random.Random) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "name": "latency",
                "value": 100 + rng.gauss(0, 2),
                "unit": "ms",
                "source": "probe",
                "timestamp": t0 + i,
            }
        )
        for i in range(n)
    ]


async def _inject_anomaly(nc, t0: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    """150 ordinary points then a spike: the statistical detector flags the spike."""
    t0 = t0 or time.time() - 200
    for msg in _normal(t0, 150, random.Random(7)):
        await nc.publish(STREAM, msg)
    await nc.publish(
        STREAM,
        orjson.dumps(
            {
                "name": "latency",
                "value": 900.0,
                "unit": "ms",
                "source": "probe",
                "timestamp": t0 + 150,
            }
        ),
    )
    await nc.flush()


async def _sse(
    url: str,
    want: int,
    out: list[dict[str, Any]],
    opened: asyncio.Event,
    headers: dict[str, str] | None = None,
) -> None:
    async with httpx.AsyncClient(timeout=None) as http:
        async with http.stream("GET", url, headers=headers or {}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith(
                "text/event-stream"
            )
            opened.set()
            frame: dict[str, Any] = {}
            async for line in r.aiter_lines():
                if line == "":
                    if "event" in frame:
                        out.append(frame)
                        if len(out) >= want:
                            return
                    frame = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(": ")
                    frame[k] = json.loads(v) if k == "data" else v


# ---------------------------------------------------------------------------- transports
async def test_anomaly_reaches_grpc_sse_and_nats_with_one_sequence(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await make_twin(
        nats_server.url,
        model="statistical",
        world_model={"implementation": "statistical", "settings": {"background_fitting": False}},
    )
    nats_got: list[Any] = []

    async def on_event(msg: Any) -> None:
        nats_got.append(msg)

    sub = await nc.subscribe("polaris.digitaltwin.events.>", cb=on_event)
    await confirm_interest(nc)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    call = stub.Watch(pb.WatchRequest(systems=["probe"], kinds=["anomaly_started"]))
    await asyncio.wait_for(call.initial_metadata(), 10)  # subscribed
    sse: list[dict[str, Any]] = []
    opened = asyncio.Event()
    sse_task = asyncio.create_task(
        _sse(
            f"http://127.0.0.1:{app.http_port}/v1/watch?systems=probe&kinds=anomaly_started",
            1,
            sse,
            opened,
        )
    )
    await asyncio.wait_for(opened.wait(), 10)
    await wait_for(lambda: app.servicer.watchers.open["sse"] == 1)
    await _inject_anomaly(nc)
    ev = await asyncio.wait_for(call.read(), 20)
    assert ev.kind == "anomaly_started" and ev.system == "probe"
    data = json_format.MessageToDict(ev.data)
    assert (
        data["metric"] == "latency"
        and data["value"] == 900.0
        and data["score"] >= data["threshold"]
    )
    await asyncio.wait_for(sse_task, 20)
    assert sse[0]["event"] == "anomaly_started" and sse[0]["id"] == str(ev.sequence)
    assert (
        sse[0]["data"]["sequence"] == str(ev.sequence)
        and sse[0]["data"]["data"]["metric"] == "latency"
    )
    await wait_for(
        lambda: any(m.subject == "polaris.digitaltwin.events.anomaly_started" for m in nats_got),
        timeout=10,
    )
    on_nats = next(orjson.loads(m.data) for m in nats_got if m.subject.endswith("anomaly_started"))
    assert on_nats == sse[0]["data"]  # the same JSON on every transport
    call.cancel()
    await sub.unsubscribe()


async def test_watch_filters_invalid_kinds_and_diagnosis_events(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await make_twin(nats_server.url, model="mock")
    for system in ("web", "db"):
        for i in range(10):
            await nc.publish(
                STREAM,
                orjson.dumps(
                    {
                        "name": "cpu",
                        "value": 10 + i * i,
                        "source": system,
                        "timestamp": time.time() - 10 + i,
                    }
                ),
            )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied >= 20)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Watch(pb.WatchRequest(kinds=["anomaly_begun"])).read()
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "anomaly_begun" in info.value.details()
    )
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{app.http_port}/v1/watch?kinds=anomaly_begun")
        assert r.status_code == 400 and r.json()["status"] == "INVALID_ARGUMENT"
        r = await http.get(f"http://127.0.0.1:{app.http_port}/v1/watch?since=-4")
        assert r.status_code == 400
    call = stub.Watch(pb.WatchRequest(kinds=["diagnosis"], systems=["web"]))
    await asyncio.wait_for(call.initial_metadata(), 10)
    await stub.Diagnose(
        pb.DiagnosisRequest(anomaly_description="other", context={"system": "db"})
    )  # filtered out
    await stub.Diagnose(
        pb.DiagnosisRequest(
            diagnosis_id="d1", anomaly_description="cpu high", context={"system": "web"}
        )
    )
    ev = await asyncio.wait_for(call.read(), 10)
    data = json_format.MessageToDict(ev.data)
    assert (
        ev.kind == "diagnosis"
        and ev.system == "web"
        and data["diagnosis_id"] == "d1"
        and data["hypotheses"]
    )
    call.cancel()


async def test_slow_watchers_are_dropped_with_a_reason(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, model="mock", events={"queue_size": 5})
    bus = app.runtime.state.events
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    call = stub.Watch(pb.WatchRequest())
    await asyncio.wait_for(call.initial_metadata(), 10)
    got: list[dict[str, Any]] = []
    opened = asyncio.Event()
    sse_task = asyncio.create_task(
        _sse(f"http://127.0.0.1:{app.http_port}/v1/watch", 100, got, opened)
    )
    await asyncio.wait_for(opened.wait(), 10)
    await wait_for(lambda: app.servicer.watchers.open == {"grpc": 1, "sse": 1})
    for i in range(50):  # in one go: neither watcher can send before its queue of 5 is full
        bus.publish("drift", "s", {"i": i})
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            received.append(await asyncio.wait_for(call.read(), 10))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        "slow watcher dropped: 5 events waiting" in info.value.details()
        and "since_sequence" in info.value.details()
    )
    assert len(received) <= 5
    await asyncio.wait_for(sse_task, 10)
    assert got[-1]["event"] == "dropped" and "slow watcher dropped" in got[-1]["data"]["reason"]
    assert bus.watchers_dropped_total == 2 and bus.subscribers == 1  # the NATS sink remains
    assert app.servicer.watchers.open == {"grpc": 0, "sse": 0}


async def test_reconnect_replays_from_last_event_id(nats_server, make_twin) -> None:
    app = await make_twin(nats_server.url, model="mock")
    bus = app.runtime.state.events
    for i in range(5):
        bus.publish("drift", "s", {"i": i})
    got: list[dict[str, Any]] = []
    opened = asyncio.Event()
    await asyncio.wait_for(
        _sse(
            f"http://127.0.0.1:{app.http_port}/v1/watch",
            2,
            got,
            opened,
            {"Last-Event-ID": str(bus.last_sequence - 2)},
        ),
        10,
    )
    assert [g["data"]["data"]["i"] for g in got] == [3, 4]
    got.clear()
    await asyncio.wait_for(
        _sse(
            f"http://127.0.0.1:{app.http_port}/v1/watch?from_start=1&kinds=drift",
            5,
            got,
            asyncio.Event(),
        ),
        10,
    )
    assert [g["data"]["data"]["i"] for g in got] == [0, 1, 2, 3, 4]


async def test_watcher_limits(nats_server, make_twin, channel_for) -> None:
    app = await make_twin(
        nats_server.url, model="mock", grpc={"max_workers": 4}, events={"max_watchers": 3}
    )
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    calls = []
    for _ in range(2):  # one after the other: the server may take concurrent calls in any order
        calls.append(stub.Watch(pb.WatchRequest()))
        await calls[-1].initial_metadata()
    await wait_for(lambda: app.servicer.watchers.open["grpc"] == 2)
    calls.append(stub.Watch(pb.WatchRequest()))
    with pytest.raises(grpc.aio.AioRpcError) as info:  # gRPC: at most half of max_workers
        await asyncio.wait_for(calls[2].read(), 10)
    assert (
        info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "half of grpc.max_workers" in info.value.details()
    )
    # unary RPCs still have their slots
    assert (await stub.Manage(pb.ManagementRequest(operation="health_check"))).success
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", f"http://127.0.0.1:{app.http_port}/v1/watch") as first:
            assert first.status_code == 200
            await wait_for(lambda: sum(app.servicer.watchers.open.values()) == 3)
            r = await http.get(f"http://127.0.0.1:{app.http_port}/v1/watch")
            assert r.status_code == 429 and "events.max_watchers" in r.json()["message"]
    for c in calls:
        c.cancel()


async def test_stop_ends_watchers_at_once_and_health_changes_are_events(
    make_twin, channel_for
) -> None:
    from twin.ingest.embedded import EmbeddedNatsServer

    server = EmbeddedNatsServer(jetstream=False)
    url = await server.start()
    try:
        app = await make_twin(
            url,
            model="mock",
            nats={"max_reconnect_attempts": -1, "reconnect_wait_sec": 0.1},
            events={"health_poll_sec": 0.2},
        )
        stub = pb_grpc.DigitalTwinStub(channel_for(app))
        call = stub.Watch(pb.WatchRequest(kinds=[HEALTH_CHANGED], systems=["anything"]))
        await asyncio.wait_for(call.initial_metadata(), 10)
        await server.stop()
        ev = await asyncio.wait_for(call.read(), 15)
        data = json_format.MessageToDict(ev.data)
        assert ev.system == "" and (data["from"], data["to"]) == ("healthy", "degraded")
        assert "ingestion is not connected to NATS" in data["issues"]
        t0 = time.perf_counter()
        await app.stop()
        assert time.perf_counter() - t0 < app.config.grpc.grace_period_sec + 0.5
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), 5)
        assert (
            info.value.code() == grpc.StatusCode.UNAVAILABLE
            and "shutting down" in info.value.details()
        )
    finally:
        await server.stop()


@pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl not installed")
async def test_grpcurl_watch_prints_events(nats_server, make_twin) -> None:
    app = await make_twin(nats_server.url, model="mock")
    bus = app.runtime.state.events
    bus.publish(
        ANOMALY_STARTED,
        "swim",
        {"metric": "average.response.time", "score": 0.9999, "value": 812.0, "threshold": 0.9997},
    )
    proc = await asyncio.create_subprocess_exec(
        "grpcurl",
        "-plaintext",
        "-max-time",
        "3",
        "-d",
        '{"systems": ["swim"], "from_start": true}',
        f"127.0.0.1:{app.grpc_port}",
        "polaris.digitaltwin.DigitalTwin/Watch",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    printed = json.loads(out)
    assert printed["kind"] == "anomaly_started" and printed["system"] == "swim"
    assert printed["data"] == {
        "metric": "average.response.time",
        "score": 0.9999,
        "value": 812,
        "threshold": 0.9997,
    }
    assert b"DeadlineExceeded" in err  # grpcurl's -max-time ends the stream


async def test_historical_include_scores_gives_the_detector_scores() -> None:
    """What the console's score lane draws: the range's scores, bucket maxima, the threshold."""
    from twin.core.config import load_config
    from twin.core.events import Point
    from twin.models.base import QueryRequest
    from twin.runtime import TwinRuntime

    rt = TwinRuntime(
        load_config(
            overrides={
                "digital_twin": {
                    "world_model": {
                        "implementation": "statistical",
                        "settings": {"background_fitting": False},
                    }
                }
            },
            environ={},
        )
    )
    await rt.initialize()
    try:
        rng = random.Random(3)
        t0 = time.time() - 1000
        rt.ingest_points(
            [
                Point("probe", "latency", t0 + i, 100 + rng.gauss(0, 2), "ms", None)
                for i in range(300)
            ]
        )
        rt.ingest_points([Point("probe", "latency", t0 + 300, 900.0, "ms", None)])
        params = {
            "system": "probe",
            "metric": "latency",
            "window_minutes": "60",
            "include": "scores",
            "max_points": "50",
        }
        res = await rt.model.query(QueryRequest("q", "historical", "", params))
        entry = res.result["systems"]["probe"]["latency"]
        assert res.metadata["anomaly_threshold"] == str(entry["threshold"])
        assert 0 < len(entry["scores"]) <= 50
        assert (
            max(s for _, s in entry["scores"]) >= entry["threshold"]
        )  # the spike survives downsampling
        plain = await rt.model.query(
            QueryRequest("q", "historical", "", {k: v for k, v in params.items() if k != "include"})
        )
        assert "scores" not in plain.result["systems"]["probe"]["latency"]
    finally:
        await rt.shutdown()
