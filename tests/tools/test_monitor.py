"""``polaris-twin top`` against a live twin."""

from __future__ import annotations

import argparse
import asyncio
import io

import grpc
import nats
import orjson

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.cli import main as cli_main
from twin.ingest.embedded import EmbeddedNatsServer
from twin.tools import monitor
from twin.tools.loadgen import batch_message, telemetry

from support import wait_for


async def test_once_prints_throughput_queue_dead_letters_and_latencies(
    nats_server: EmbeddedNatsServer, make_twin, capsys
) -> None:
    app = await make_twin(nats_server.url)
    gen = telemetry(seed=2, start=1_700_000_000.0)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(
            "polaris.telemetry.events.batch", batch_message([next(gen) for _ in range(100)])
        )
        await nc.publish("polaris.telemetry.events.stream", b"{broken")
        await nc.flush()
        await wait_for(
            lambda: (
                app.runtime.ingest_stats.events_applied >= 100
                and app.runtime.ingest_stats.dead_lettered >= 1
            )
        )
    finally:
        await nc.drain()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        await pb_grpc.DigitalTwinStub(ch).Query(
            pb.QueryRequest(query_id="q", query_type="current_state")
        )

    # the monitor is a blocking gRPC client: run it off the loop that serves the twin
    rc = await asyncio.to_thread(
        cli_main, ["top", "--target", f"127.0.0.1:{app.grpc_port}", "--once"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "\x1b[" not in out  # --once: no escapes
    assert "NATS connected" in out
    assert "events total" in out and "100" in out
    assert "dead letters" in out and "invalid_json=1" in out
    assert "queue" in out
    lines = [line.split() for line in out.splitlines()]
    query = next(parts for parts in lines if parts and parts[0] == "query")
    assert query[1] == "1"  # one Query call so far


async def test_live_frames_show_rates_between_refreshes(
    nats_server: EmbeddedNatsServer, make_twin
) -> None:
    app = await make_twin(nats_server.url)
    target = f"127.0.0.1:{app.grpc_port}"
    first = await asyncio.to_thread(monitor.fetch, target)
    app.runtime.ingest_stats.events_received += 500
    app.runtime.ingest_stats.events_applied += 500
    second = await asyncio.to_thread(monitor.fetch, target)
    frame = monitor.render(second, first, 2.0, target, color=True)
    assert "events/s in" in frame and "250" in frame  # 500 events over 2 s
    assert "\x1b[1m" in frame


def test_unreachable_twin_exits_1(capsys) -> None:
    args = argparse.Namespace(
        target="127.0.0.1:1", interval=0.1, once=True, timeout=1.0, no_color=True
    )
    assert monitor.run(args, io.StringIO()) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_render_handles_an_empty_twin() -> None:
    frame = monitor.render({"ingest_connected": 0.0, "uptime_seconds": 5.0})
    assert "DISCONNECTED" in frame and "(no RPCs yet)" in frame
    assert orjson.dumps(frame)  # plain text
