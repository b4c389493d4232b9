"""Model supervision: ``world_model.health_check_interval_sec`` and ``reload_on_failure``.

Health is otherwise computed only when someone asks, so a model that broke (a lost
client, a poisoned internal state) stayed broken until an operator reloaded it. The
supervisor asks on the configured interval, keeps the last answer (for transitions and
metrics), and reloads an unhealthy model in place when ``reload_on_failure`` is on. A
reload that does not help is retried with exponential backoff (one interval, then 2×,
4×, ... capped at 32 intervals), so a model that cannot recover (say, no API key) costs
little and floods no log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from twin.models.base import Health

log = logging.getLogger(__name__)
MAX_BACKOFF_FACTOR = 32


class ModelSupervisor:
    def __init__(
        self,
        health: Callable[[], Awaitable[Health]],
        reload: Callable[[], Awaitable[str]],
        interval_sec: float,
        reload_on_failure: bool,
        *,
        on_change: Callable[[Health], Awaitable[None] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health = health
        self._reload = reload
        self.interval = interval_sec
        self.reload_on_failure = reload_on_failure
        self.on_change = on_change
        self._clock = clock
        self.last: Health | None = None
        self.checks = 0
        self.reloads = 0
        self.reload_failures = 0
        self._failed_reloads_in_a_row = 0
        self._next_reload_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="model-supervisor")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("model supervisor died", exc_info=task.exception())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> Health:
        """One round: ask for health, report a change, reload when due."""
        self.checks += 1
        try:
            health = await self._health()
        except Exception as exc:  # noqa: BLE001 - a health call that raises is itself a failure
            health = Health(
                "unhealthy", [f"health check raised {exc.__class__.__name__}: {exc}"], {}, "", ""
            )
        if self.last is None or health.status != self.last.status:
            log.log(
                logging.INFO if health.status == "healthy" else logging.WARNING,
                "world model health: %s%s",
                health.status,
                f" ({'; '.join(health.issues)})" if health.issues else "",
            )
            if self.on_change is not None:
                result = self.on_change(health)
                if result is not None:
                    await result
        self.last = health
        if health.status == "unhealthy":
            await self._maybe_reload()
        else:
            self._failed_reloads_in_a_row = 0
        return health

    async def _maybe_reload(self) -> None:
        if not self.reload_on_failure or self._clock() < self._next_reload_at:
            return
        self.reloads += 1
        try:
            note = await self._reload()
            log.warning("world model was unhealthy: %s", note)
        except Exception as exc:  # noqa: BLE001 - counted and retried later
            self.reload_failures += 1
            log.error("reloading the unhealthy world model failed: %s", exc)
        factor = min(MAX_BACKOFF_FACTOR, 2**self._failed_reloads_in_a_row)
        self._failed_reloads_in_a_row += 1
        self._next_reload_at = self._clock() + self.interval * factor

    def metrics(self) -> dict[str, float]:
        return {
            "model_health_checks_total": self.checks,
            "model_reloads_on_failure_total": self.reloads,
            "model_reload_failures_total": self.reload_failures,
        }
