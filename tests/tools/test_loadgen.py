"""The load generator publishes the original formats; the twin applies every event."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from twin.core.events import decode_batch, decode_stream
from twin.tools.loadgen import batch_message, telemetry

from support import wait_for


def test_generated_events_decode_with_the_twins_own_decoders() -> None:
    gen = telemetry(seed=3, start=1_700_000_000.0)
    events = [next(gen) for _ in range(300)]
    names = {e["name"] for e in events}
    assert {
        "dimmer",
        "active_servers",
        "arrival_rate",
        "server_utilization",
        "average_response_time",
        "utilization_server_1",
        "cpu_usage",
    } <= names
    points, errors = decode_batch(batch_message(events), 0.0)
    assert errors == [] and len(points) == 300
    import orjson

    assert decode_stream(orjson.dumps(events[0]), 0.0).source == "swim"


def test_generator_is_deterministic_per_seed() -> None:
    a, b = telemetry(seed=5, start=0.0), telemetry(seed=5, start=0.0)
    assert [next(a) for _ in range(50)] == [next(b) for _ in range(50)]


@pytest.mark.parametrize("mode", ["stream", "batch"])
async def test_load_generator_against_a_running_twin(nats_server, make_twin, mode: str) -> None:
    app = await make_twin(nats_server.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "twin.cli",
        "load",
        "--nats-url",
        nats_server.url,
        "--telemetry-rate",
        "2000",
        "--duration",
        "1",
        "--mode",
        mode,
        "--quiet",
        "--actions-every",
        "500",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    sent = int(re.search(rb"published (\d+) events", err).group(1))
    assert sent == 2000
    await wait_for(
        lambda: (
            app.runtime.ingest_stats.events_applied - app.runtime.ingest_stats.executions_applied
            == sent
        ),
        timeout=20,
    )
    assert app.runtime.ingest_stats.dead_lettered == 0
    assert app.runtime.ingest_stats.executions_applied >= 3
    assert app.runtime.state.store.get("swim", "arrival.rate") is not None


def test_wall_clock_mode_stamps_events_with_the_publish_time() -> None:
    import time
    from datetime import datetime

    gen = telemetry(seed=1, step=3600.0, wall_clock=True)
    stamps = [datetime.fromisoformat(next(gen)["timestamp"]).timestamp() for _ in range(100)]
    assert max(stamps) - min(stamps) < 5 and abs(stamps[-1] - time.time()) < 5
    sim = telemetry(seed=1, start=0.0, step=3600.0)
    sim_stamps = {next(sim)["timestamp"] for _ in range(100)}
    assert len(sim_stamps) > 1
