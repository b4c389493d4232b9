"""Issue 17, defect 0: a JetStream delivery lost in a reconnect must be applied, never
acknowledged unapplied. The connection is cut at chosen deliveries by a protocol-aware
proxy (``nats_proxy``), so the fault happens at the same points on every run."""

from __future__ import annotations

import asyncio

import nats
from faults.js_harness import (
    JsPublisher,
    applied_by_series,
    batches,
    expected_of,
    make_events,
    metrics,
    wait_applied,
)
from faults.nats_proxy import CutPlan, NatsCutProxy, js_delivery

N_MESSAGES = 60  # batch messages of 100 events each
CUT_AT = {7, 25, 43}


def test_delivery_parser_reads_stream_sequence_and_delivery_count() -> None:
    v1 = b"MSG _INBOX.x 3 $JS.ACK.S.C.2.17.30.1700000000000000000.5 120\r\n"
    v2 = b"MSG _INBOX.x 3 $JS.ACK.dom.acc.S.C.1.18.31.1700000000000000000.4.tok 120\r\n"
    assert js_delivery(v1) == (17, 2) and js_delivery(v2) == (18, 1)
    assert js_delivery(b"MSG _INBOX.x 3 12\r\n") is None


async def test_deliveries_lost_in_reconnects_are_applied_not_skipped(
    nats_server, make_twin, channel_for
) -> None:
    plan = CutPlan(set(CUT_AT))
    proxy = NatsCutProxy("127.0.0.1", int(nats_server.url.rsplit(":", 1)[1]), plan)
    await proxy.start()
    try:
        app = await make_twin(
            proxy.url,
            nats={
                "max_reconnect_attempts": -1,
                "reconnect_wait_sec": 0.1,
                "jetstream": {
                    "enabled": True,
                    "durable": "lost",
                    "ack_wait_sec": 2,
                    "consumer_batch": 8,
                },
            },
        )
        ch = channel_for(app)
        events = make_events(N_MESSAGES * 100)
        nc = await nats.connect(nats_server.url)
        pub = JsPublisher(nc)
        msgs = batches(events)
        # Published in small steps so later messages reach the twin for the first time
        # while the ones cut away wait for redelivery: exactly the window of the defect.
        for i in range(0, len(msgs), 3):
            await pub.publish_all(msgs[i : i + 3])
            await asyncio.sleep(0.05)
        await nc.close()
        await wait_applied(ch, len(events), timeout=60)
        await asyncio.sleep(0.5)
        m = await metrics(ch)
        assert plan.cut_at == sorted(CUT_AT)  # every planned cut happened
        assert proxy.connections >= 1 + len(CUT_AT) and m["nats_reconnects_total"] >= len(CUT_AT)
        assert await applied_by_series(ch) == expected_of(events)  # nothing lost, nothing twice
        assert m["applied_sequence"] == N_MESSAGES
    finally:
        await proxy.stop()
