"""A model call under its time budget, in the caller's task.

``asyncio.wait_for`` wraps every call in a new task: a task, a timer and two more trips
round the event loop per RPC, and under ingestion every trip can wait behind a batch.
``call_within`` runs the call in the RPC's own task under ``asyncio.timeout``: one timer,
no task. Semantics stay those of ``wait_for``: a call that suspends past its budget is
cancelled and ``TimeoutError`` raised; a call that never suspends is answered (no timer
can interrupt synchronous code, with ``wait_for`` neither); a call that swallows its
cancellation returns its value.

Not eager execution (run inline up to the first suspension, then continue in a task): a
coroutine that moves to another task after it entered ``asyncio.timeout`` or a
``TaskGroup`` has those cancel the wrong task (the LLM model's call timeout did).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["call_within"]


async def call_within(call: Awaitable[T], budget: float) -> T:
    """``await asyncio.wait_for(call, budget)`` without a task per call."""
    async with asyncio.timeout(budget):
        return await call
