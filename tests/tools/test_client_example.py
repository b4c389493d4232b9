"""examples/digital_twin_client.py runs against a live twin (real gRPC)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from twin.tools.loadgen import batch_message, telemetry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digital_twin_client.py"


async def test_client_example_prints_every_answer(nats_server, nc, make_twin) -> None:
    app = await make_twin(nats_server.url)
    gen = telemetry(seed=2, start=1_700_000_000.0)
    await nc.publish(
        "polaris.telemetry.events.batch", batch_message([next(gen) for _ in range(300)])
    )
    await nc.flush()
    from support import wait_for

    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 300)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--target",
        f"127.0.0.1:{app.grpc_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert (
        "cpu.usage" in text
        and "Future states: 12" in text
        and "Status: healthy" in text
        and "Hypothesis #1" in text
    )
    assert (
        "Compare: success=True best=" in text and text.count("  #") == 4
    )  # three plans + do_nothing
