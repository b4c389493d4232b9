"""JetStream ingestion, snapshots, replay and replicas, through a real nats-server and
real twins (in process, real gRPC on port 0). Every test states what was published and
asserts what was applied, per series, via ``Manage series_stats``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
import orjson
import pytest
from faults.js_harness import (
    JsPublisher,
    applied_by_series,
    batches,
    create_stream,
    expected_of,
    make_events,
    manage,
    metrics,
    report_fault,
    total,
    wait_applied,
)
from nats.aio.msg import Msg

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.durability.snapshot import FORMAT_VERSION, decode, encode_v1
from twin.ingest.jetstream import SequenceTracker


def js_sections(snapdir: Any = None, durable: str = "t1", **js: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "nats": {"jetstream": {"enabled": True, "durable": durable, "ack_wait_sec": 2, **js}}
    }
    if snapdir is not None:
        out["state"] = {"snapshot_dir": str(snapdir), "snapshot_interval_sec": 3600}
    return out


async def publish(url: str, events: list[dict[str, Any]]) -> None:
    nc = await nats.connect(url)
    try:
        await JsPublisher(nc).publish_all(batches(events))
    finally:
        await nc.close()


def test_sequence_tracker_floor_waits_at_a_hole_until_the_server_vouches_for_it() -> None:
    t = SequenceTracker(0)
    assert [t.begin(s) for s in (1, 2, 5)] == ["new", "new", "new"]  # 3, 4: removed, or lost
    t.finish(2)
    assert t.applied == 0 and t.applied_above == [2]
    assert t.begin(2) == "applied" and t.begin(1) == "queued"
    t.finish(1)
    t.finish(5)
    # A later delivery is no evidence that 3 and 4 were delivered: a delivery lost in a
    # reconnect leaves the same hole, and the server redelivers it after ack_wait.
    assert t.applied == 2 and t.applied_above == [5] and t.has_gap
    assert t.begin(4) == "new"  # the redelivery is applied, not skipped
    t.finish(4)
    assert t.applied == 2 and t.applied_above == [4, 5]
    t.sync(3)  # the server's ack floor: 3 is acked or gone from the stream
    assert t.applied == 5 and t.applied_above == [] and not t.has_gap
    assert t.begin(4) == "applied" and t.duplicates == 2
    t.sync(1)  # a stale, lower ack floor never lowers the floor
    assert t.applied == 5


def test_sequence_tracker_replay_from_a_time_takes_the_floor_from_the_server() -> None:
    late = SequenceTracker(None)
    late.sync(39)  # the new consumer's ack floor: where the server starts it
    assert late.applied == 39 and late.begin(41) == "new" and late.begin(40) == "new"
    late.finish(41)
    assert late.applied == 39
    late.finish(40)
    assert late.applied == 41


async def test_lost_acks_are_redelivered_and_skipped_so_each_event_applies_once(
    nats_server, make_twin, channel_for, monkeypatch
) -> None:
    events = make_events(5000)  # 50 batch messages
    dropped = 0
    real_ack = Msg.ack

    async def lossy_ack(self: Msg) -> None:
        nonlocal dropped
        if self.subject.startswith("polaris.telemetry") and dropped < 5:
            dropped += 1  # the ack never reaches the server: it redelivers after ack_wait
            return
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", lossy_ack)
    app = await make_twin(nats_server.url, **js_sections(ack_wait_sec=1))
    ch = channel_for(app)
    await publish(nats_server.url, events)
    await wait_applied(ch, 5000)
    end = time.monotonic() + 10
    while (await metrics(ch))["jetstream_duplicates_skipped_total"] < 5 and time.monotonic() < end:
        await asyncio.sleep(0.1)
    m = await metrics(ch)
    report_fault(
        "5 acks lost (redelivered after ack_wait 1 s)",
        5000,
        total(await applied_by_series(ch)),
        0,
        None,
        f"redeliveries recognised and skipped: {m['jetstream_duplicates_skipped_total']:.0f}",
    )
    assert dropped == 5
    assert m["jetstream_duplicates_skipped_total"] == 5  # the 5 redeliveries were recognised
    assert await applied_by_series(ch) == expected_of(events)  # and not applied twice
    assert m["applied_sequence"] == 50


async def test_restart_restores_the_snapshot_and_replays_only_the_tail(
    nats_server, make_twin, channel_for, tmp_path
) -> None:
    first, second = make_events(3000), make_events(2000, start=3000)
    app = await make_twin(nats_server.url, **js_sections(tmp_path))
    await publish(nats_server.url, first)
    await wait_applied(channel_for(app), 3000)
    await app.stop()  # flushes a snapshot at sequence 30
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-00000000000000000030.pts"]
    await publish(nats_server.url, second)  # published while no twin runs
    app2 = await make_twin(nats_server.url, **js_sections(tmp_path))
    ch = channel_for(app2)
    await wait_applied(ch, 5000)
    m = await metrics(ch)
    assert await applied_by_series(ch) == expected_of(first + second)
    assert m["snapshot_restored_sequence"] == 30 and m["snapshot_restored_samples"] == 3000
    assert m["events_applied_total"] == 2000  # only the tail came from the stream


async def test_replay_from_config_time_rebuilds_only_messages_stored_after_it(
    nats_server, make_twin, channel_for
) -> None:
    old, new = make_events(1000), make_events(1000, start=1000)
    nc = await nats.connect(nats_server.url)
    await create_stream(nc)
    await nc.close()
    await publish(nats_server.url, old)
    await asyncio.sleep(1.0)
    cut = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.2)
    await publish(nats_server.url, new)
    app = await make_twin(nats_server.url, **js_sections(replay_from=cut))
    ch = channel_for(app)
    await wait_applied(ch, 1000)
    await asyncio.sleep(0.3)
    assert await applied_by_series(ch) == expected_of(new)


async def test_manage_replay_from_a_sequence_rebuilds_state_and_reports_progress(
    nats_server, make_twin, channel_for
) -> None:
    events = make_events(5000)
    app = await make_twin(nats_server.url, **js_sections())
    ch = channel_for(app)
    await publish(nats_server.url, events)
    await wait_applied(ch, 5000)

    resp = await manage(ch, "replay", from_sequence="21")
    assert resp.success and resp.metrics["target_sequence"] == "50"
    end = time.monotonic() + 20
    while True:
        st = orjson.loads((await manage(ch, "replay_status")).result)
        if st["state"] == "done" or time.monotonic() > end:
            break
        await asyncio.sleep(0.05)
    assert (
        st["state"] == "done"
        and st["progress"] == 1.0
        and st["applied_sequence"] == 50
        and st["messages_total"] == 30
    )
    assert await applied_by_series(ch) == expected_of(
        events[2000:]
    )  # messages 21..50 = events 2000..4999

    # Time travel: the value of sys3 as of an event time inside the replayed range.
    stub = pb_grpc.DigitalTwinStub(ch)
    at = events[2503]["timestamp"]
    q = await stub.Query(
        pb.QueryRequest(
            query_type="historical", parameters={"system": "sys3", "metric": "load", "at": str(at)}
        )
    )
    assert q.success and q.metadata["applied_sequence"] == "50"
    assert orjson.loads(q.result)["systems"]["sys3"]["load"]["value"] == events[2503]["value"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await manage(ch, "replay", from_sequence="1", from_time="2024-01-01T00:00:00Z")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await manage(ch, "replay", from_sequence="zero")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("damage", ["corrupt", "future_version", "version_1"])
async def test_bad_or_old_snapshot_on_start(
    nats_server, make_twin, channel_for, tmp_path, damage
) -> None:
    """corrupt / future version: rejected, reported (log, health, metric), state rebuilt by
    replay from the stream's start; version 1: migrated and used."""
    events = make_events(3000)
    app = await make_twin(nats_server.url, **js_sections(tmp_path))
    await publish(nats_server.url, events)
    await wait_applied(channel_for(app), 3000)
    await app.stop()
    (snap,) = tmp_path.iterdir()
    data = snap.read_bytes()
    if damage == "corrupt":
        snap.write_bytes(data[:-100] + b"\0" * 100)
    elif damage == "future_version":
        head, body = data.split(b"\n", 1)
        future = head.replace(f'"format_version":{FORMAT_VERSION}'.encode(), b'"format_version":99')
        assert future != head
        snap.write_bytes(future + b"\n" + body)
    else:
        snap.write_bytes(encode_v1(decode(data)))
    t0 = time.monotonic()
    app2 = await make_twin(nats_server.url, **js_sections(tmp_path))
    ch = channel_for(app2)
    await wait_applied(ch, 3000)
    recovery = time.monotonic() - t0
    m = await metrics(ch)
    report_fault(
        f"snapshot on start: {damage}",
        3000,
        total(await applied_by_series(ch)),
        0,
        recovery,
        "rejected + full replay" if damage != "version_1" else "migrated v1 → v2, no replay needed",
    )
    health = (await manage(ch, "health_check")).health_status
    assert await applied_by_series(ch) == expected_of(events)
    if damage == "version_1":
        assert m["snapshots_rejected_total"] == 0 and m["snapshot_restored_sequence"] == 30
        assert m["events_applied_total"] == 0
    else:
        assert m["snapshots_rejected_total"] == 1 and m["snapshot_restored_sequence"] == 0
        assert m["events_applied_total"] == 3000  # rebuilt by replaying the whole stream
        assert any("rejected" in i for i in health.issues), health.issues
        assert health.status == "degraded"
        expected_reason = (
            "checksum mismatch" if damage == "corrupt" else "unsupported snapshot format version 99"
        )
        assert any(expected_reason in i for i in health.issues)


async def test_each_replica_consumes_the_whole_stream_with_its_own_durable(
    nats_server, make_twin, channel_for
) -> None:
    events = make_events(4000)
    a = await make_twin(nats_server.url, **js_sections(durable="replica-a"))
    b = await make_twin(nats_server.url, **js_sections(durable="replica-b"))
    await publish(nats_server.url, events)
    for app in (a, b):
        ch = channel_for(app)
        await wait_applied(ch, 4000)
        assert await applied_by_series(ch) == expected_of(events)
        q = await pb_grpc.DigitalTwinStub(ch).Query(pb.QueryRequest(query_type="current_state"))
        assert q.metadata["applied_sequence"] == "40"
    nc = await nats.connect(nats_server.url)
    try:
        names = {c.name async for c in _consumers(nc)}
    finally:
        await nc.close()
    assert {"replica-a", "replica-b"} <= names


async def _consumers(nc: Any):  # type: ignore[no-untyped-def]
    jsm = nc.jsm()
    for c in await jsm.consumers_info("POLARIS_TWIN"):
        yield c


async def test_dead_lettered_messages_are_acknowledged_and_counted_once(
    nats_server, make_twin, channel_for
) -> None:
    """Sent: 10 good batch messages (1 000 events), 5 malformed messages. Applied: 1 000;
    dead-lettered: 5; the applied sequence passes the malformed ones (they are acked)."""
    app = await make_twin(nats_server.url, **js_sections())
    ch = channel_for(app)
    nc = await nats.connect(nats_server.url)
    try:
        got: list[bytes] = []

        async def on_error(m: Msg) -> None:
            got.append(m.data)

        sub = await nc.subscribe("polaris.digitaltwin.errors", cb=on_error)
        pub = JsPublisher(nc)
        events = make_events(1000)
        for i, (subject, payload, mid) in enumerate(batches(events)):
            await pub.publish(subject, payload, mid)
            if i % 2 == 0:
                await pub.publish("polaris.telemetry.events.stream", b"{not json", f"bad-{i}")
        await wait_applied(ch, 1000)
        end = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await sub.unsubscribe()
    finally:
        await nc.close()
    m = await metrics(ch)
    assert total(await applied_by_series(ch)) == 1000 and len(got) == 5
    assert m["dead_lettered_total"] == 5 and m["applied_sequence"] == 15
    assert all(orjson.loads(r)["reason"].startswith("invalid JSON") for r in got)


async def test_readiness_waits_until_the_replay_at_start_caught_up(
    nats_server, make_twin, channel_for
) -> None:
    """Sent before the twin starts: 20 000 events (200 messages); the model takes 10 ms per
    batch of 100, so the replay takes about 2 s. gRPC health is NOT_SERVING (and
    health_check names the replay) until all 200 are applied, then SERVING."""
    from faults.slow_model import register
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    events = make_events(20_000)
    nc = await nats.connect(nats_server.url)
    await create_stream(nc)
    await nc.close()
    await publish(nats_server.url, events)
    app = await make_twin(
        nats_server.url,
        model=register(),
        world_model={"settings": {"update_delay": 0.01}},
        **js_sections(),
    )
    ch = channel_for(app)
    health = health_pb2_grpc.HealthStub(ch)
    early = await health.Check(health_pb2.HealthCheckRequest(service=""))
    issues = (await manage(ch, "health_check")).health_status.issues
    await wait_applied(ch, 20_000, timeout=60)
    end = time.monotonic() + 5
    while (
        late := await health.Check(health_pb2.HealthCheckRequest(service=""))
    ).status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < end:
        await asyncio.sleep(0.05)
    assert early.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert any(i.startswith("replaying the stream") for i in issues), issues
    assert late.status == health_pb2.HealthCheckResponse.SERVING
    assert await applied_by_series(ch) == expected_of(events)


async def test_snapshot_newer_than_a_recreated_stream_keeps_its_state_and_applies_the_new_stream(
    make_twin, channel_for, tmp_path
) -> None:
    """Sent: 3 000 events to server 1 (snapshot at sequence 30), then 1 000 events to a
    fresh server 2 whose stream starts again at sequence 1. Applied: all 4 000, and the
    mismatch is reported in health instead of silently skipping sequences 1..30."""
    from twin.ingest.embedded import EmbeddedNatsServer

    first, second = make_events(3000), make_events(1000, start=3000)
    async with EmbeddedNatsServer() as one:
        app = await make_twin(one.url, **js_sections(tmp_path))
        await publish(one.url, first)
        await wait_applied(channel_for(app), 3000)
        await app.stop()
    async with EmbeddedNatsServer() as two:
        app2 = await make_twin(two.url, **js_sections(tmp_path))
        ch = channel_for(app2)
        await publish(two.url, second)
        await wait_applied(ch, 4000)
        m = await metrics(ch)
        issues = (await manage(ch, "health_check")).health_status.issues
        assert await applied_by_series(ch) == expected_of(first + second)
        assert m["jetstream_stream_resets_total"] == 1 and m["applied_sequence"] == 10
        assert any("stream was recreated" in i for i in issues)
        await app2.stop()


async def test_snapshots_without_jetstream_restore_the_state_on_restart(
    nats_server, make_twin, channel_for, tmp_path
) -> None:
    """Core NATS + snapshot_dir: sent 2 000 events; after a restart the twin holds them all
    again from the snapshot (there is no stream to replay)."""
    events = make_events(2000)
    sections = {"state": {"snapshot_dir": str(tmp_path), "snapshot_interval_sec": 3600}}
    app = await make_twin(nats_server.url, **sections)
    nc = await nats.connect(nats_server.url)
    try:
        for subject, payload, _ in batches(events):
            await nc.publish(subject, payload)
        await nc.flush()
    finally:
        await nc.close()
    await wait_applied(channel_for(app), 2000)
    await app.stop()
    app2 = await make_twin(nats_server.url, **sections)
    ch = channel_for(app2)
    assert await applied_by_series(ch) == expected_of(events)
    m = await metrics(ch)
    assert m["snapshot_restored_samples"] == 2000 and "applied_sequence" not in m
