"""Model calls run eagerly: no task per call unless the call really waits.

``asyncio.wait_for`` wraps every coroutine in a new task, which costs a task, a timer
and two more trips round the event loop per RPC: ~35 us of the servicer's ~85 us per
``Query`` (in-process, 2-core bench machine). Most model calls (``current_state``, cached
forecasts) never suspend, and a call that never suspends can never be timed out by
``wait_for`` either: the loop cannot run its timer in the middle of synchronous code.
So ``call_within`` runs the coroutine inline up to its first suspension; only a call
that does suspend (a fit, a diagnosis in a worker) continues as a task under
``wait_for`` with the same budget, exactly as before.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["call_within"]


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    """Drives a coroutine that already ran up to its first suspension (``pending`` is
    what it yielded) to its end; what the task sends or throws in is passed on."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # cancellation (a timeout) goes into the call
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            pending = coro.send(sent)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def _finish(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    return await _resume(coro, pending)


async def call_within(call: Awaitable[T], budget: float) -> T:
    """``await asyncio.wait_for(call, budget)``, without a task while ``call`` does not
    suspend. Raises ``TimeoutError`` as ``wait_for`` does."""
    if not isinstance(call, types.CoroutineType):
        return await asyncio.wait_for(call, budget)
    try:
        pending = call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        call.close()
        raise
    return await asyncio.wait_for(_finish(call, pending), budget)
