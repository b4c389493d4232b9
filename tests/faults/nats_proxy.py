"""A NATS-protocol-aware TCP proxy that cuts the connection at a chosen delivery.

Faults at "a chosen point" need more than killing the server: the window in which a
JetStream delivery is lost is between the server sending it and the client reading it.
The proxy forwards client → server bytes as they are and parses server → client frames
(``MSG``/``HMSG`` with their byte counts). When a frame is a pull-consumer delivery
whose ``$JS.ACK`` reply names a chosen stream sequence on its first delivery, that frame
and everything after it in the buffer are dropped and both sockets are closed, exactly
as a connection dying mid-delivery would. The client reconnects through the proxy,
which keeps listening; the server believes the dropped messages were delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


def js_delivery(control_line: bytes) -> tuple[int, int] | None:
    """(stream sequence, delivery count) of a JetStream delivery's control line, else None.

    ``MSG <subject> <sid> $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    <n>``,
    or the v2 reply ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>...``
    with a trailing token.
    """
    parts = control_line.split()
    if len(parts) < 5 or not parts[3].startswith(b"$JS.ACK."):
        return None
    tokens = parts[3].split(b".")
    first = 4 if len(tokens) == 9 else 6
    return int(tokens[first + 1]), int(tokens[first])


@dataclass
class CutPlan:
    """Cut the connection when these stream sequences are first delivered (each once)."""

    sequences: set[int]
    cut_at: list[int] = field(default_factory=list)

    def take(self, seq: int, delivered: int) -> bool:
        if delivered == 1 and seq in self.sequences:
            self.sequences.discard(seq)
            self.cut_at.append(seq)
            return True
        return False


class NatsCutProxy:
    """Listens on a loopback port and forwards to ``upstream`` (host, port)."""

    def __init__(self, upstream_host: str, upstream_port: int, plan: CutPlan) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.plan = plan
        self.connections = 0
        self.dropped_frames = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        up = asyncio.create_task(self._pipe(c_reader, s_writer))
        down = asyncio.create_task(self._frames(s_reader, c_writer))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        for w in (c_writer, s_writer):
            w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forwards server frames one by one; returns (closing both sides) at a planned cut."""
        while True:
            line = await reader.readuntil(b"\r\n")
            frame = line
            if line.startswith((b"MSG ", b"HMSG ")):
                size = int(line.split()[-1])
                frame += await reader.readexactly(size + 2)
                hit = js_delivery(line)
                if hit is not None and self.plan.take(*hit):
                    self.dropped_frames += 1
                    return
            writer.write(frame)
            await writer.drain()
