"""NATS → twin, on a real nats-server: payload shapes, dead letters, backpressure, reconnects."""

from __future__ import annotations

import asyncio

import nats
import orjson
import pytest

from twin.ingest.embedded import EmbeddedNatsServer
from twin.models.base import EventBatch
from twin.models.mock import MockWorldModel
from twin.models.registry import register_model

from support import wait_for

STREAM = "polaris.telemetry.events.stream"
BATCH = "polaris.telemetry.events.batch"
EXEC = "polaris.execution.results"
CAL = "polaris.digitaltwin.calibrate"
ERRORS = "polaris.digitaltwin.errors"


async def collect_dead_letters(nc: nats.NATS) -> list[dict]:
    got: list[dict] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        got.append(orjson.loads(msg.data))

    await nc.subscribe(ERRORS, cb=cb)
    await nc.flush()
    return got


async def test_each_subject_and_payload_shape_is_applied(nats_server, nc, make_twin) -> None:
    app = await make_twin(nats_server.url)
    store = app.runtime.state.store
    await nc.publish(
        STREAM,
        orjson.dumps(
            {
                "name": "cpu_usage",
                "value": 71.5,
                "unit": "percent",
                "source": "web_cluster",
                "timestamp": "2024-01-01T00:00:00Z",
            }
        ),
    )
    await nc.publish(
        STREAM,
        orjson.dumps(
            {
                "event_id": "k1",
                "timestamp": "2024-01-01T00:00:01Z",
                "source": "swim",
                "event_type": "telemetry",
                "data": {"name": "dimmer", "value": 0.8},
                "metadata": {},
            }
        ),
    )
    await nc.publish(
        BATCH,
        orjson.dumps(
            {
                "batch_id": "b",
                "batch_timestamp": "2024-01-01T00:00:02Z",
                "count": 2,
                "events": [
                    {"name": "arrival_rate", "value": 30, "source": "swim"},
                    {"name": "active_servers", "value": 3, "source": "swim"},
                ],
            }
        ),
    )
    await nc.publish(
        EXEC,
        orjson.dumps(
            {
                "action_id": "a1",
                "action_type": "ADD_SERVER",
                "status": "success",
                "success": True,
                "message": "added",
                "finished_at": "2024-01-01T00:00:03Z",
                "duration_sec": 1.0,
                "metadata": {"target": "swim"},
            }
        ),
    )
    await nc.publish(
        CAL,
        orjson.dumps(
            {
                "calibration_id": "c1",
                "prediction_id": "p1",
                "predicted_outcome": {"value": 1},
                "actual_outcome": {"value": 2},
                "accuracy_metrics": {},
            }
        ),
    )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 6)
    assert store.get("web_cluster", "cpu.usage").last_v == 71.5
    assert store.get("swim", "dimmer").last_v == 0.8
    assert store.get("swim", "arrival.rate").last_v == 30.0
    assert store.get("swim", "active.servers").last_v == 3.0
    action = app.runtime.state.actions[-1]
    assert (action.action_type, action.target, action.success) == ("ADD_SERVER", "swim", True)
    assert app.runtime.state.calibrations[-1].prediction_id == "p1"
    assert app.runtime.ingest_stats.dead_lettered == 0


async def test_malformed_messages_go_to_dead_letter_with_reason_and_good_neighbours_are_applied(
    nats_server, nc, make_twin
) -> None:
    app = await make_twin(nats_server.url, nats={"max_payload_bytes": 4096})
    dead = await collect_dead_letters(nc)
    await nc.publish(STREAM, b"{definitely not json")
    await nc.publish(STREAM, orjson.dumps({"name": "cpu", "value": "1", "tags": ["wrong"]}))
    await nc.publish(STREAM, orjson.dumps({"name": "ok_metric", "value": 1.0, "source": "s"}))
    await nc.publish(
        STREAM, orjson.dumps({"name": "big", "value": 1.0, "metadata": {"pad": "x" * 5000}})
    )
    events = [
        {"name": "good_a", "value": 1, "source": "s"},
        {"name": "1bad", "value": 2},
        {"name": "good_b", "value": 3, "source": "s"},
        {"name": "typed", "value": {"nested": True}},
    ]
    await nc.publish(BATCH, orjson.dumps({"batch_id": "B7", "count": 4, "events": events}))
    await nc.publish(EXEC, orjson.dumps({"action_id": "a", "status": "on_fire"}))
    await nc.flush()
    await wait_for(lambda: len(dead) == 6 and app.runtime.ingest_stats.events_applied == 3)
    store = app.runtime.state.store
    assert store.get("s", "ok.metric") is not None
    assert store.get("s", "good.a").last_v == 1 and store.get("s", "good.b").last_v == 3
    by_reason = {d["reason"].split(":")[0]: d for d in dead}
    assert (
        "invalid JSON" in by_reason
        and by_reason["invalid JSON"]["payload"] == "{definitely not json"
    )
    assert any(d["reason"].startswith("oversize") and d["payload_bytes"] > 4096 for d in dead)
    batch_errors = sorted((d for d in dead if d["subject"] == BATCH), key=lambda d: d["index"])
    assert [d["index"] for d in batch_errors] == [1, 3]
    assert orjson.loads(batch_errors[0]["payload"])["name"] == "1bad"
    assert all(d["subject"] in (STREAM, BATCH, EXEC) and d["reason"] for d in dead)
    assert any("unknown status" in d["reason"] for d in dead if d["subject"] == EXEC)
    stats = app.runtime.ingest_stats
    assert stats.dead_lettered == 6
    assert stats.events_received == stats.events_applied + stats.dead_lettered


class SlowModel(MockWorldModel):
    name = "slow_test"
    delay = 0.05

    def update(self, batch: EventBatch) -> None:
        import time

        time.sleep(self.delay)  # a model that cannot keep up


async def test_backpressure_bounds_the_queue_and_loses_nothing_when_the_model_is_slow(
    nats_server, nc, make_twin
) -> None:
    register_model("slow_test", SlowModel)
    app = await make_twin(
        nats_server.url, model="slow_test", nats={"queue_maxsize": 5, "batch_size": 10}
    )
    n = 400
    for i in range(n):
        await nc.publish(
            STREAM,
            orjson.dumps({"name": "m", "value": float(i), "source": "s", "timestamp": 1e9 + i}),
        )
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.queue_high_water >= 5, timeout=20)
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == n, timeout=60)
    stats = app.runtime.ingest_stats
    assert stats.queue_high_water <= 5
    assert stats.slow_consumer_drops == 0
    series = app.runtime.state.store.get("s", "m")
    assert len(series) == n and series.arrays()[1].sum() == sum(range(n))
    assert app.runtime.metrics_snapshot()["queue_high_water"] == stats.queue_high_water


async def test_twin_reconnects_by_itself_when_nats_restarts(make_twin, tmp_path) -> None:
    server = EmbeddedNatsServer(jetstream=False)
    await server.start()
    port = server.port
    try:
        app = await make_twin(
            server.url, nats={"max_reconnect_attempts": -1, "reconnect_wait_sec": 0.1}
        )
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        await nc.publish(STREAM, orjson.dumps({"name": "before", "value": 1, "source": "s"}))
        await nc.flush()
        await wait_for(lambda: app.runtime.ingest_stats.events_applied == 1)
        await server.stop()
        await wait_for(lambda: not app.ingestor.connected, timeout=30)
        assert app.runtime.ingest_stats.disconnects >= 1
        server = EmbeddedNatsServer(port=port, jetstream=False)
        await server.start()
        await wait_for(lambda: app.ingestor.connected, timeout=20)
        await wait_for(lambda: nc.is_connected, timeout=20)
        await nc.publish(STREAM, orjson.dumps({"name": "after", "value": 2, "source": "s"}))
        await nc.flush()
        await wait_for(lambda: app.runtime.ingest_stats.events_applied == 2, timeout=30)
        assert app.runtime.state.store.get("s", "after").last_v == 2
        assert app.runtime.ingest_stats.reconnects >= 1
        await nc.close()
    finally:
        await server.stop()


async def test_queue_group_shares_the_stream_between_replicas(nats_server, nc, make_twin) -> None:
    a = await make_twin(nats_server.url)
    b = await make_twin(nats_server.url)
    for _ in range(200):
        await nc.publish(STREAM, orjson.dumps({"name": "m", "value": 1, "source": "s"}))
    await nc.flush()
    await wait_for(
        lambda: a.runtime.ingest_stats.events_applied + b.runtime.ingest_stats.events_applied == 200
    )
    await asyncio.sleep(0.2)
    assert a.runtime.ingest_stats.events_applied + b.runtime.ingest_stats.events_applied == 200


@pytest.mark.parametrize("batch_size", [1, 50])
async def test_batches_flush_on_size_and_on_timeout(
    nats_server, nc, make_twin, batch_size: int
) -> None:
    app = await make_twin(
        nats_server.url, nats={"batch_size": batch_size, "batch_timeout_sec": 0.2}
    )
    for i in range(5):
        await nc.publish(STREAM, orjson.dumps({"name": "m", "value": i, "source": "s"}))
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 5, timeout=30)
    batches = app.runtime.ingest_stats.batches_applied
    assert batches == (5 if batch_size == 1 else 1) or (batch_size == 50 and batches <= 2)


async def test_zero_reconnect_attempts_fails_fast_instead_of_retrying_forever(make_twin) -> None:
    import socket

    from twin.core.errors import IngestError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(IngestError, match="cannot connect to NATS"):
        await asyncio.wait_for(
            make_twin(f"nats://127.0.0.1:{port}", nats={"max_reconnect_attempts": 0}), 10
        )
