"""Issue 17, defect 12: the twin turns ready only once the server holds its subscriptions.

``nc.flush()`` in nats-py 2.16 can return before earlier SUBs reached the server (its PING
overtakes them), so a producer that waits for readiness could lose its first message. A
raw-socket publisher (no client library in between) publishes the moment ``subscribe()``
returns, many times: before the fix about one attempt in twenty was lost.
"""

from __future__ import annotations

import asyncio

from twin.core.state import TwinState
from twin.core.store import Retention
from twin.ingest.nats_ingest import Ingestor
from twin.models.mock import MockWorldModel

from support import twin_config

ROUNDS = 150


async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Waits for the server's PONG, answering its own PINGs meanwhile."""
    while (line := await reader.readuntil(b"\r\n")) != b"PONG\r\n":
        if line == b"PING\r\n":
            writer.write(b"PONG\r\n")


async def raw_publisher(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\r\n")  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
    await writer.drain()
    await pong(reader, writer)
    return reader, writer


async def test_a_message_published_right_after_subscribe_returns_is_never_lost(nats_server) -> None:
    port = int(nats_server.url.rsplit(":", 1)[1])
    reader, writer = await raw_publisher(port)
    payload = b'{"name":"cpu","value":1.0,"source":"s"}'
    lost = 0
    try:
        for i in range(ROUNDS):
            state = TwinState(Retention(100, 0), 10)
            ingestor = Ingestor(
                twin_config(nats_server.url, nats={"queue_group": f"g{i}"}).nats,
                state,
                lambda: MockWorldModel(state),  # noqa: B023 - used in this round
            )
            await ingestor.start(nats_server.url)
            writer.write(
                b"PUB polaris.telemetry.events.stream %d\r\n%s\r\nPING\r\n"
                % (len(payload), payload)
            )
            await writer.drain()
            await pong(reader, writer)  # the server has routed it
            for _ in range(200):
                if ingestor.stats.events_received:
                    break
                await asyncio.sleep(0.005)
            lost += ingestor.stats.events_received == 0
            await ingestor.stop()
    finally:
        writer.close()
    assert lost == 0
