"""``call_within``: ``asyncio.wait_for`` semantics, in the caller's task."""

from __future__ import annotations

import asyncio
import time

import pytest

from twin.service.budget import call_within


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_call_that_never_suspends_is_answered() -> None:
    outer = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def call() -> str:
        seen.append(asyncio.current_task())
        _busy(0.05)  # longer than the budget: no timer can interrupt synchronous code
        return "answer"

    assert await call_within(call(), 0.01) == "answer"
    assert seen == [outer]  # no task per call


async def test_timeouts_inside_the_call_keep_working_across_suspensions() -> None:
    """A call that enters its own timeout before suspending (the LLM model's call
    timeout) is timed out by it, not by the outer budget, and answers in band."""

    async def call() -> str:
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            return "inner timeout"
        return "never"

    t0 = time.perf_counter()
    assert await call_within(call(), 2.0) == "inner timeout"
    assert time.perf_counter() - t0 < 1.0
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_a_call_that_suspends_keeps_its_task() -> None:
    outer = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def call() -> int:
        await asyncio.sleep(0.001)
        seen.append(asyncio.current_task())
        return 1

    assert await call_within(call(), 1.0) == 1
    assert seen == [outer]


async def test_a_call_that_suspends_is_still_timed_out_and_cancelled() -> None:
    finished = asyncio.Event()
    cancelled = False

    async def call() -> str:
        nonlocal cancelled
        _busy(0.001)  # some synchronous work before the first suspension
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            finished.set()
        return "never"

    t0 = time.perf_counter()
    with pytest.raises(TimeoutError):
        await call_within(call(), 0.05)
    assert time.perf_counter() - t0 < 1.0
    assert finished.is_set() and cancelled


async def test_a_call_that_suspends_and_finishes_in_time_returns_its_result() -> None:
    async def call() -> int:
        await asyncio.sleep(0)  # a bare yield
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, 41)
        return await fut + 1  # a future

    assert await call_within(call(), 1.0) == 42


async def test_errors_come_out_before_and_after_the_first_suspension() -> None:
    async def early() -> None:
        raise ValueError("early")

    async def late() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("late")

    with pytest.raises(ValueError, match="early"):
        await call_within(early(), 1.0)
    with pytest.raises(KeyError, match="late"):
        await call_within(late(), 1.0)


async def test_a_call_may_handle_its_cancellation_and_answer() -> None:
    async def call() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "partial"
        return "full"

    # wait_for's own rule: a call that swallows the cancel returns its value
    assert await call_within(call(), 0.02) == "partial"


async def test_cancelling_the_caller_cancels_a_suspended_call() -> None:
    cancelled = asyncio.Event()

    async def call() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(call_within(call(), 10.0))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()


async def test_other_awaitables_go_through_wait_for() -> None:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, fut.set_result, "ok")
    assert await call_within(fut, 1.0) == "ok"
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await call_within(never, 0.02)
