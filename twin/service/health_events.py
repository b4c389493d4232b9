"""``health_changed`` events: the twin's health status (healthy / degraded /
unhealthy / not_initialized) checked every ``events.health_poll_sec`` and at once when
ingestion connects or disconnects; a change is published as a twin-wide event."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from twin.core.notify import HEALTH_CHANGED
from twin.runtime import TwinRuntime

log = logging.getLogger(__name__)


class HealthEvents:
    def __init__(self, runtime: TwinRuntime, poll_sec: float) -> None:
        self.rt = runtime
        self.poll_sec = poll_sec
        self.status: str | None = None
        self._poke = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-events")

    def poke(self) -> None:
        """Check now (ingestion status changed)."""
        self._poke.set()

    async def check(self) -> None:
        h = await self.rt.health()
        if h.status != self.status:
            if self.status is not None:
                data = {
                    "from": self.status,
                    "to": h.status,
                    "issues": list(h.issues[:10]),
                    "model": h.model_type,
                }
                self.rt.state.events.publish(HEALTH_CHANGED, "", data)
                log.info(
                    "health %s -> %s%s",
                    self.status,
                    h.status,
                    f": {'; '.join(h.issues[:3])}" if h.issues else "",
                )
            self.status = h.status

    async def _run(self) -> None:
        # Ends on a flag, not on cancellation alone: on Python 3.11 wait_for() can
        # swallow a cancel that races with the event being set.
        while not self._stopping:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failing health() must not end the loop
                log.exception("health check for events failed")
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_sec)
            self._poke.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._poke.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 2.0)
        except (TimeoutError, Exception):  # noqa: BLE001 - stop anyway
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
