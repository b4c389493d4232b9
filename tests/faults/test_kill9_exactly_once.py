"""``kill -9`` of a real ``polaris-twin`` in the middle of a 100 k-event load.

Sent: 100 000 telemetry events in 1 000 JetStream batch messages (100 events each,
10 series, integer values), each acknowledged by the stream. The twin (JetStream on,
snapshots every 10 000 events into a temp dir) is killed with SIGKILL once it applied
at least 30 000 events while the publisher is still running, then restarted with the
same config. Asserted through gRPC only: every series holds exactly the published
count and sum (each event applied exactly once), and the restart started from a
snapshot (not from sequence 1).
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from faults.js_harness import (
    JsPublisher,
    TwinProcess,
    applied_by_series,
    batches,
    duplicates_of,
    expected_of,
    make_events,
    manage,
    metrics,
    report_fault,
    total,
    wait_applied,
    wait_ready,
)

from twin.ingest.embedded import EmbeddedNatsServer

N = 100_000


@pytest.mark.slow
async def test_kill9_mid_load_then_restart_applies_every_event_exactly_once(tmp_path) -> None:
    store = tmp_path / "js"
    snaps = tmp_path / "snapshots"
    async with EmbeddedNatsServer(store_dir=str(store)) as ns:
        twin = TwinProcess(
            tmp_path,
            {
                "nats": {
                    "url": ns.url,
                    "batch_size": 1000,
                    "batch_timeout_sec": 0.02,
                    "jetstream": {"enabled": True, "durable": "twin-kill9", "ack_wait_sec": 5},
                },
                "grpc": {"host": "127.0.0.1", "port": 0, "grace_period_sec": 0.5},
                "state": {
                    "snapshot_dir": str(snaps),
                    "snapshot_every_events": 10_000,
                    "snapshot_interval_sec": 1,
                },
                "debugging": {"log_level": "INFO"},
            },
        )
        events = make_events(N)
        expected = expected_of(events)
        nc = await nats.connect(ns.url)
        pub = JsPublisher(nc)
        try:
            await twin.start()
            async with twin.channel() as ch:
                await wait_ready(ch)
                # Paced so the kill lands mid-load: ~1 000 messages over a few seconds.
                publishing = asyncio.create_task(
                    pub.publish_all(batches(events), pause_every=50, pause=0.15)
                )
                while True:
                    m = await metrics(ch)
                    if m["events_applied_total"] >= 30_000:
                        break
                    await asyncio.sleep(0.05)
                applied_before_kill = m["events_applied_total"]
                snapshots_before_kill = m["snapshots_written_total"]
            twin.kill9()
            killed_while_publishing = not publishing.done()
            await publishing
            assert pub.acked == N // 100

            t_restart = time.monotonic()
            await twin.start()
            async with twin.channel() as ch:
                await wait_ready(ch)
                t_ready = time.monotonic() - t_restart
                await wait_applied(ch, N, timeout=90)
                recovery = time.monotonic() - t_restart
                await asyncio.sleep(0.5)  # anything extra (a duplicate) would show up now
                applied = await applied_by_series(ch)
                m = await metrics(ch)
                hist = await manage(ch, "health_check")
            print(
                f"\nkill -9 fault: published={N} (acked messages={pub.acked}), applied before "
                f"kill={applied_before_kill:.0f}, "
                f"snapshots before kill={snapshots_before_kill:.0f}, restored from "
                f"sequence={m['snapshot_restored_sequence']:.0f}, "
                f"applied after restart={sum(c for c, _ in applied.values())}, "
                f"duplicates skipped={m['jetstream_duplicates_skipped_total']:.0f}, ready after "
                f"{t_ready:.2f}s, "
                f"caught up after {recovery:.2f}s"
            )
        finally:
            await twin.terminate()
            await nc.close()
    report_fault(
        "kill -9 of polaris-twin mid-load (JetStream + snapshots), restart",
        N,
        total(applied),
        duplicates_of(applied, expected),
        recovery,
        f"killed at {applied_before_kill:.0f} applied; restored snapshot seq "
        f"{m['snapshot_restored_sequence']:.0f}, replayed the tail; ready (health_check answers) "
        f"after {t_ready:.2f}s",
    )
    assert killed_while_publishing
    assert applied == expected  # per-series count and sum: every event exactly once
    assert m["snapshot_restored_sequence"] > 0  # resumed from a snapshot, replayed only the tail
    assert m["applied_sequence"] == N // 100
    assert hist.success
