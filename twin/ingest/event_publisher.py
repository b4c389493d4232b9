"""Publishes the twin's pushed events on NATS: ``<prefix>.<kind>`` (default
``polaris.digitaltwin.events.anomaly_started`` etc.), the JSON body being exactly what
``Watch`` and SSE deliver (``twin.core.notify.event_dict``).

A sink, not a watcher: it subscribes with a bounded queue that discards (and counts)
the newest events when NATS cannot keep up, so the twin never blocks on it. With
several replicas each one publishes its own events; the ``Polaris-Twin-Id`` header
says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient

from twin.core.notify import EventBus, Subscription, WatcherDropped, event_dict

log = logging.getLogger(__name__)

QUEUE = 10_000


class EventPublisher:
    def __init__(self, bus: EventBus, prefix: str, twin_id: str = "") -> None:
        self.bus = bus
        self.prefix = prefix.rstrip(".")
        self.twin_id = twin_id
        self.published = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    def start(self, nc: NatsClient) -> None:
        self._sub = self.bus.subscribe(queue_size=QUEUE, overflow="count", name="nats")
        self._task = asyncio.get_running_loop().create_task(self._run(nc), name="events-nats")

    async def _run(self, nc: NatsClient) -> None:
        assert self._sub is not None
        headers = {"Polaris-Twin-Id": self.twin_id} if self.twin_id else None
        try:
            while True:
                ev = await self._sub.get()
                try:
                    await nc.publish(
                        f"{self.prefix}.{ev.kind}", orjson.dumps(event_dict(ev)), headers=headers
                    )
                    self.published += 1
                except Exception as exc:  # noqa: BLE001 - closed/buffer full: count, go on
                    self.failures += 1
                    if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                        log.warning(
                            "cannot publish event on NATS (%d failures so far): %s",
                            self.failures,
                            exc,
                        )
        except WatcherDropped:
            pass

    async def stop(self, timeout: float = 2.0) -> None:
        """Publishes what is still queued (bounded by ``timeout``), then stops."""
        sub, task = self._sub, self._task
        if sub is None or task is None:
            return
        end = asyncio.get_running_loop().time() + timeout
        while sub.pending() and not task.done() and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.01)
        sub.close("publisher stopped")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def register(self, registry: Any) -> None:
        from twin.core.metrics import Figures

        f = Figures(registry)
        f.counter(
            "events_nats_published", "Pushed events published on NATS.", lambda: self.published
        )
        f.counter(
            "events_nats_failures",
            "Pushed events NATS refused (closed, buffer full).",
            lambda: self.failures,
        )
