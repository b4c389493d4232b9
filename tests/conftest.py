"""Shared fixtures: a real nats-server per test, real twins on free ports.

Everything here starts real processes/servers and tears them down in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

# isort: off
import twin  # noqa: F401 - first: sets gRPC's fork-support default before grpc loads
# isort: on
import grpc
import nats
import pytest

from twin.app import TwinApp
from twin.ingest.embedded import EmbeddedNatsServer

from support import twin_config


@pytest.fixture
async def nats_server() -> AsyncIterator[EmbeddedNatsServer]:
    """A real nats-server (JetStream on) on a random loopback port."""
    server = EmbeddedNatsServer(jetstream=True)
    await server.start()
    try:
        yield server
    finally:
        await stop_or_show_what_hangs(server.stop(), "EmbeddedNatsServer.stop()")


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.drain()


TwinFactory = Callable[..., Awaitable[TwinApp]]


@pytest.fixture
async def make_twin() -> AsyncIterator[TwinFactory]:
    """Starts TwinApps (real gRPC + NATS ingestion); all are stopped at teardown."""
    apps: list[TwinApp] = []
    # One queue group per test: nats-server ports are random and can be reused, and a twin
    # of an earlier test that is still reconnecting must never join (and split) this
    # test's queue group.
    group = f"twin-test-{uuid.uuid4().hex[:12]}"

    async def factory(
        nats_url: str | None, model: str = "mock", **sections: dict[str, Any]
    ) -> TwinApp:
        sections.setdefault("world_model", {})["implementation"] = model
        sections.setdefault("nats", {}).setdefault("queue_group", group)
        app = TwinApp(twin_config(nats_url, **sections))
        apps.append(app)
        await app.start()
        return app

    try:
        yield factory
    finally:
        for app in reversed(apps):
            await stop_or_show_what_hangs(app.stop(), "TwinApp.stop()")


async def stop_or_show_what_hangs(stop: Awaitable[None], what: str, limit: float = 60.0) -> None:
    """A teardown that hangs (seen once in ~10 whole-suite runs, cause unknown) fails within
    ``limit`` and prints every task's stack, where pytest-timeout's dump shows only threads."""
    try:
        await asyncio.wait_for(asyncio.shield(stop), limit)
    except TimeoutError:
        for task in asyncio.all_tasks():
            print(f"--- {task.get_name()}: {task!r}")
            task.print_stack(limit=12, file=sys.stdout)
        raise AssertionError(f"{what} did not finish in {limit:g} s") from None


@pytest.fixture
async def channel_for() -> AsyncIterator[Callable[[TwinApp], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def open_channel(app: TwinApp) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        channels.append(ch)
        return ch

    try:
        yield open_channel
    finally:
        for ch in channels:
            await ch.close()
