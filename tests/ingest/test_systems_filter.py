"""``digital_twin.systems``: which managed systems a twin answers for (names or globs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import nats
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twin.app import TwinApp
from twin.core.config import load_config
from twin.ingest.replay_lag import ReplayLag
from twin.ingest.systems import (
    SystemFilter,
    calibration_system,
    execution_system,
    subject_matches,
)

from support import wait_for


def test_no_systems_accepts_everything():
    f = SystemFilter([])
    assert not f.active and f.accepts("anything") and f.accepts("")


def test_names_and_globs():
    f = SystemFilter(["swim", "web-*", "db[12]"])
    assert f.active and not f.literal
    assert [
        s for s in ("swim", "web-1", "web-", "db1", "db3", "swimmer", "SWIM") if f.accepts(s)
    ] == [
        "swim",
        "web-1",
        "web-",
        "db1",
    ]


def test_unattributed_records_are_applied():
    assert SystemFilter(["swim"]).accepts("")


def test_the_verdict_cache_is_bounded(monkeypatch):
    import twin.ingest.systems as mod

    monkeypatch.setattr(mod, "_CACHE_MAX", 10)
    f = SystemFilter(["a*"])
    for i in range(25):
        f.accepts(f"s{i}")
    assert len(f._cache) <= 10
    assert f.accepts("abc") and not f.accepts("s3")


@pytest.mark.parametrize(
    "metadata, target, output, system",
    [
        ({"system": "swim"}, "web-1", None, "swim"),
        (None, "web-1", None, "web-1"),
        ({"target": "db"}, None, None, "db"),
        (None, None, {"target": "cache"}, "cache"),
        (None, None, None, ""),
    ],
)
def test_the_system_of_an_execution_result(metadata, target, output, system):
    assert execution_system(metadata, target, output) == system


def test_the_system_of_a_calibration():
    assert calibration_system({"system": "swim", "value": 1}, {"value": 2}) == "swim"
    assert calibration_system({"value": 1}, {"source": "web-1"}) == "web-1"
    assert calibration_system({"metric": "x"}, {"value": 2}) == ""


def test_literal_systems_narrow_wildcard_subjects_on_the_server():
    f = SystemFilter(["swim", "web"])
    assert f.literal
    assert f.subjects_for("polaris.telemetry.events.stream.*") == [
        "polaris.telemetry.events.stream.swim",
        "polaris.telemetry.events.stream.web",
    ]
    # No system token in the subject: the server cannot filter, the twin does.
    assert f.subjects_for("polaris.telemetry.events.batch") == ["polaris.telemetry.events.batch"]
    assert f.server_side(["a.*", "b", "a.*"]) == ["a.swim", "a.web", "b"]


@pytest.mark.parametrize("systems", [["web-*"], ["swim", "a.b"], ["x y"], []])
def test_patterns_and_names_that_are_not_one_token_keep_the_wildcard(systems):
    f = SystemFilter(systems)
    assert f.subjects_for("polaris.telemetry.events.stream.*") == [
        "polaris.telemetry.events.stream.*"
    ]


@pytest.mark.parametrize(
    "pattern, subject, match",
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.c", False),
        ("a.*.c", "a.b.c", True),
    ],
)
def test_nats_subject_matching(pattern, subject, match):
    assert subject_matches(pattern, subject) is match


# ----------------------------------------------------------------------- a real twin


T0 = 1_700_000_000.0


def config(url: str, systems: list[str], **nats_cfg: Any) -> Any:
    return load_config(
        overrides={
            "digital_twin": {
                "systems": systems,
                "grpc": {"host": "127.0.0.1", "port": 0, "grace_period_sec": 1.0},
                "nats": {
                    "url": url,
                    "queue_group": "",
                    "batch_timeout_sec": 0.05,
                    "batch_size": 100,
                    "reconnect_wait_sec": 0.2,
                    **nats_cfg,
                },
                "world_model": {"implementation": "mock"},
            }
        },
        environ={},
    )


@pytest.fixture
async def twins() -> AsyncIterator[list[TwinApp]]:
    apps: list[TwinApp] = []
    try:
        yield apps
    finally:
        for app in reversed(apps):
            await app.stop()


async def start(apps: list[TwinApp], cfg: Any) -> TwinApp:
    app = TwinApp(cfg)
    apps.append(app)
    await app.start()
    return app


def event(source: str, i: int, name: str = "load") -> dict[str, Any]:
    return {"name": name, "value": float(i), "source": source, "timestamp": T0 + i}


async def test_a_twin_keeps_its_systems_and_counts_the_others_as_skipped(nats_server, twins):
    app = await start(twins, config(nats_server.url, ["web-*"]))
    nc = await nats.connect(nats_server.url)
    try:
        batch = [event(s, i) for i, s in enumerate(["web-1", "db", "web-2", "db", "web-1"])]
        await nc.publish("polaris.telemetry.events.batch", orjson.dumps({"events": batch}))
        await nc.publish("polaris.telemetry.events.stream", orjson.dumps(event("db", 9)))
        await nc.publish("polaris.telemetry.events.stream", orjson.dumps(event("web-3", 10)))
        for target, meta in (("db", None), ("x", {"system": "web-1"}), (None, None)):
            body: dict[str, Any] = {"action_id": f"a-{target}", "action_type": "ADD_SERVER"}
            if target:
                body["target"] = target
            if meta:
                body["metadata"] = meta
            await nc.publish("polaris.execution.results", orjson.dumps(body))
        for outcome in (
            {"system": "db", "value": 1},
            {"system": "web-9", "value": 1},
            {"value": 1},
        ):
            await nc.publish(
                "polaris.digitaltwin.calibrate",
                orjson.dumps(
                    {
                        "prediction_id": "p",
                        "predicted_outcome": outcome,
                        "actual_outcome": {"value": 2},
                    }
                ),
            )
        await nc.flush()
    finally:
        await nc.drain()
    stats = app.runtime.ingest_stats
    await wait_for(lambda: stats.events_applied >= 4 + 2 + 2 and sum(stats.skipped.values()) >= 5)
    await asyncio.sleep(0.3)  # nothing more arrives
    assert set(app.runtime.state.store.sources()) == {"web-1", "web-2", "web-3"}
    assert dict(stats.skipped) == {"telemetry": 3, "execution": 1, "calibration": 1}
    assert [a.target for a in app.runtime.state.actions] == ["x", ""]
    assert len(app.runtime.state.calibrations) == 2
    assert stats.dead_lettered == 0  # not errors
    snapshot = app.runtime.metrics_snapshot()  # get_metrics: the registry's flat view
    assert snapshot["events_skipped_total.telemetry"] == 3
    assert snapshot["events_skipped_total"] == 5
    text = generate_latest(app.runtime.registry).decode()  # /metrics
    samples = {
        s.labels["kind"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "polaris_twin_events_skipped_total"
    }
    assert samples == {"telemetry": 3.0, "execution": 1.0, "calibration": 1.0}


async def test_jetstream_filters_on_the_server_when_subjects_name_the_system(nats_server, twins):
    subjects = {
        "telemetry_stream_subject": "tel.stream.*",
        "telemetry_batch_subject": "tel.batch.*",
        "execution_subject": "exec.*",
        "calibrate_subject": "cal.*",
    }
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await js.add_stream(name="SYS", subjects=list(subjects.values()))
        # The stream's newest message is another system's: the replay must still finish.
        for i, system in enumerate(["swim", "other", "swim", "other"]):
            payload = orjson.dumps({"events": [event(system, i)]})
            await js.publish(f"tel.batch.{system}", payload)
        cfg = config(
            nats_server.url,
            ["swim"],
            jetstream={"enabled": True, "stream": "SYS", "durable": "swim-0"},
            **subjects,
        )
        app = await start(twins, cfg)
        stats = app.runtime.ingest_stats
        await wait_for(lambda: stats.events_applied >= 2)
        info = await js.consumer_info("SYS", "swim-0")
        assert sorted(info.config.filter_subjects or []) == [
            "cal.swim",
            "exec.swim",
            "tel.batch.swim",
            "tel.stream.swim",
        ]
        assert info.config.inactive_threshold == 3600.0  # the default, in seconds
        await js.publish("tel.stream.other", orjson.dumps(event("other", 9)))
        await js.publish("tel.stream.swim", orjson.dumps(event("swim", 10)))
        await wait_for(lambda: stats.events_applied >= 3)
        await asyncio.sleep(0.3)
        # The server never delivered the other system's messages: nothing to skip.
        assert stats.messages_total == 3 and sum(stats.skipped.values()) == 0
        assert stats.messages_received["tel.batch.*"] == 2
        assert set(app.runtime.state.store.sources()) == {"swim"}
        # Caught up although the stream's last sequence is a message it never receives.
        assert app.durability is not None
        await wait_for(app.durability.ready, timeout=10)
        assert not app.ingestor.replaying
    finally:
        await nc.drain()


def test_replay_lag_bookkeeping():
    lag = ReplayLag(max_lag_sec=5)
    assert not lag.poll(0, now=100.0) and lag.seconds == 0
    lag.applied(99.0)
    # A backlog that began after the last idle poll is at most that old.
    assert not lag.poll(3, now=102.0) and lag.seconds == 2.0
    assert lag.poll(3, now=106.0) and lag.lagging and lag.seconds == 6.0
    lag.applied(105.0)
    assert lag.poll(1, now=109.0) and not lag.lagging and lag.seconds == 4.0
    assert not lag.poll(0, now=110.0) and lag.seconds == 0
    assert not ReplayLag(0).poll(10, now=1e9)  # 0 = off: never lagging


async def _health(app: TwinApp) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)).status


async def test_a_replica_that_falls_behind_is_unready_until_it_catches_up(nats_server, twins):
    cfg = config(
        nats_server.url,
        [],
        batch_size=1,
        jetstream={"enabled": True, "durable": "slow-0", "max_lag_sec": 1},
    )
    app = await start(twins, cfg)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert await _health(app) == serving
    original = app.ingestor.apply

    async def slow(items: list[Any]) -> None:  # a model that cannot keep up
        await asyncio.sleep(0.4)
        await original(items)

    app.ingestor.apply = slow  # type: ignore[method-assign]
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        for i in range(20):
            await js.publish("polaris.telemetry.events.stream", orjson.dumps(event("s", i)))
        status = serving
        for _ in range(200):
            status = await _health(app)
            if status != serving and app.ingestor.lag.lagging:
                break
            await asyncio.sleep(0.1)
        assert app.ingestor.lag.lagging and status != serving
        assert app.ingestor.lag.seconds > 1
        assert any("behind the stream" in i for i in app.durability.health_issues())
        await wait_for(lambda: app.runtime.ingest_stats.events_applied >= 20, timeout=60)
        for _ in range(100):
            if await _health(app) == serving:
                break
            await asyncio.sleep(0.1)
        assert await _health(app) == serving and not app.ingestor.lag.lagging
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
