"""nats-server stopped and restarted under load (same port, same JetStream store dir).

JetStream: sent 20 000 events in 200 batch messages, each acknowledged by the stream
(the publisher retries through the outage with ``Nats-Msg-Id``, so a retry is never
stored twice); applied: exactly those 20 000, per series count and sum.

Core NATS: sent 20 000 events in 200 batch messages with plain publishes; the twin
reconnects by itself; nothing is applied twice; what is lost is bounded by what was
published between the server stopping and the twin resubscribing, and the test counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import pytest
from faults.js_harness import (
    JsPublisher,
    applied_by_series,
    batches,
    duplicates_of,
    expected_of,
    make_events,
    metrics,
    report_fault,
    total,
    wait_applied,
)

from twin.ingest.embedded import EmbeddedNatsServer

N = 20_000


async def _restart(
    server: EmbeddedNatsServer, store: str, down_for: float
) -> tuple[EmbeddedNatsServer, float]:
    port = server.port
    await server.stop()
    await asyncio.sleep(down_for)
    new = EmbeddedNatsServer(port=port, store_dir=store)  # type: ignore[arg-type]
    await new.start()
    return new, time.monotonic()


@pytest.mark.slow
async def test_jetstream_loses_nothing_when_nats_server_restarts_under_load(
    make_twin, channel_for, tmp_path
) -> None:
    store = str(tmp_path / "js")
    server = EmbeddedNatsServer(store_dir=store)
    await server.start()
    try:
        app = await make_twin(
            server.url,
            nats={
                "max_reconnect_attempts": -1,
                "reconnect_wait_sec": 0.1,
                "jetstream": {"enabled": True, "durable": "restart", "ack_wait_sec": 2},
            },
        )
        ch = channel_for(app)
        events = make_events(N)
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        pub = JsPublisher(nc, timeout=1.0)
        publishing = asyncio.create_task(
            pub.publish_all(batches(events), pause_every=10, pause=0.05)
        )
        while pub.acked < 60:
            await asyncio.sleep(0.01)
        server, back_at = await _restart(server, store, down_for=1.0)
        await publishing
        await wait_applied(ch, N, timeout=60)
        recovery = time.monotonic() - back_at
        await asyncio.sleep(0.5)
        applied = await applied_by_series(ch)
        m = await metrics(ch)
        await nc.close()
        print(
            f"\nnats-server restart (JetStream): published={N} acked_messages={pub.acked} "
            f"publisher_retries={pub.retries} "
            f"stream_duplicates_dropped={pub.duplicates} applied={total(applied)} "
            f"twin_duplicates_skipped={m['jetstream_duplicates_skipped_total']:.0f} "
            f"reconnects={m['nats_reconnects_total']:.0f} caught_up_after_restart={recovery:.2f}s"
        )
        report_fault(
            "nats-server stopped 1 s and restarted under load (JetStream)",
            N,
            total(applied),
            duplicates_of(applied, expected_of(events)),
            recovery,
            f"publisher retries {pub.retries}; twin reconnects {m['nats_reconnects_total']:.0f}; "
            "recovery = server back → all applied",
        )
        assert applied == expected_of(events)
        assert m["nats_reconnects_total"] >= 1 and m["ingest_connected"] == 1.0
        assert m["applied_sequence"] == N // 100
    finally:
        await server.stop()


@pytest.mark.slow
async def test_core_nats_loss_is_bounded_by_the_outage_and_counted(
    make_twin, channel_for, tmp_path
) -> None:
    store = str(tmp_path / "js")
    server = EmbeddedNatsServer(store_dir=store)
    await server.start()
    try:
        app = await make_twin(
            server.url, nats={"max_reconnect_attempts": -1, "reconnect_wait_sec": 0.1}
        )
        ch = channel_for(app)
        events = make_events(N)
        msgs = batches(events)
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        published = flushed = 0
        window_start = window_end = None

        async def publish_all() -> None:
            nonlocal published, flushed
            for i, (subject, payload, _) in enumerate(msgs):
                while True:
                    try:
                        await nc.publish(subject, payload)
                        break
                    except nats.errors.OutboundBufferLimitError:
                        await asyncio.sleep(0.05)
                published += 1
                if i % 10 == 9:
                    with contextlib.suppress(Exception):
                        await nc.flush(timeout=0.5)
                        flushed = published  # these reached the server
                    await asyncio.sleep(0.15)
            await nc.flush(timeout=10)

        publishing = asyncio.create_task(publish_all())
        while published < 60:
            await asyncio.sleep(0.01)
        window_start = flushed
        server, back_at = await _restart(server, store, down_for=1.0)
        while (
            app.ingestor.nc is None or not app.ingestor.nc.is_connected
        ):  # the twin reconnects on its own
            await asyncio.sleep(0.01)
        reconnected = time.monotonic() - back_at
        await asyncio.sleep(0.2)  # resubscription travels with the reconnect handshake
        window_end = published
        await publishing
        await asyncio.sleep(1.0)
        applied = await applied_by_series(ch)
        m = await metrics(ch)
        await nc.close()
        expected = expected_of(events)
        lost = N - total(applied)
        # Lost at most: what was not yet confirmed at the server when it stopped, up to the
        # twin's resubscription, plus one flush group in the server's outbound buffer.
        bound = (window_end - window_start + 10) * 100
        print(
            f"\nnats-server restart (core NATS): published={N} applied={total(applied)} "
            f"lost={lost} "
            f"(bound: {bound} = messages published from the last flush before the stop to the "
            f"twin's resubscription, +10, x 100) reconnects={m['nats_reconnects_total']:.0f}"
        )
        report_fault(
            "nats-server stopped 1 s and restarted under load (core NATS)",
            N,
            total(applied),
            duplicates_of(applied, expected),
            reconnected,
            f"lost {lost} (bound {bound}); recovery = server back → twin reconnected",
        )
        assert all(applied[k][0] <= expected[k][0] for k in applied)  # never applied twice
        assert 0 <= lost <= bound
        assert (
            m["nats_disconnects_total"] >= 1
            and m["nats_reconnects_total"] >= 1
            and m["ingest_connected"] == 1.0
        )
    finally:
        await server.stop()


async def test_nats_server_restarted_without_its_store_gets_a_new_stream_and_ingestion_resumes(
    make_twin, channel_for, tmp_path
) -> None:
    """Sent: 2 000 events before and 1 000 after a restart that lost the JetStream store
    (same port, new directory). The twin recreates the stream and its consumer by itself,
    notices the sequences restarted, and applies the new 1 000: 3 000 in all."""
    server = EmbeddedNatsServer(store_dir=str(tmp_path / "a"))
    await server.start()
    try:
        app = await make_twin(
            server.url,
            nats={
                "max_reconnect_attempts": -1,
                "reconnect_wait_sec": 0.1,
                "jetstream": {"enabled": True, "durable": "lost", "ack_wait_sec": 2},
            },
        )
        ch = channel_for(app)
        first, second = make_events(2000), make_events(1000, start=2000)
        nc = await nats.connect(server.url)
        await JsPublisher(nc).publish_all(batches(first))
        await nc.close()
        await wait_applied(ch, 2000)
        server, back_at = await _restart(server, str(tmp_path / "b"), down_for=0.5)
        nc = await nats.connect(server.url)
        try:
            # The first publishes may find no stream until the twin recreated it: retried.
            await JsPublisher(nc).publish_all(batches(second))
        finally:
            await nc.close()
        await wait_applied(ch, 3000, timeout=30)
        recovery = time.monotonic() - back_at
        applied = await applied_by_series(ch)
        m = await metrics(ch)
        report_fault(
            "nats-server restarted WITHOUT its JetStream store (JetStream)",
            3000,
            total(applied),
            duplicates_of(applied, expected_of(first + second)),
            recovery,
            "stream + consumer recreated by the twin; recovery = server back → new events applied",
        )
        assert applied == expected_of(first + second)
        assert (
            m["jetstream_stream_resets_total"] == 1 and m["jetstream_consumer_rebinds_total"] >= 1
        )
    finally:
        await server.stop()
