"""Heavy computation off the serving path, behind one small interface.

``await workers.run(fn, *args)`` runs a picklable, module-level function on
picklable arguments (numpy arrays, plain data) and returns its result. With worker
processes configured (``performance.compute_workers``; by default one per spare
core) it runs in a process pool, so forecaster fits and other long numpy/Python
work never hold the serving process's interpreter lock; without them (one core, or
``compute_workers: 0``) it runs in a thread, as before. Callers do not know which.

The pool starts lazily, on the first call, with the ``forkserver`` method: workers
are forked from a small server process that has imported only what ``preload``
names, never from the twin with its threads and sockets (gRPC and nats-py do not
survive a plain fork). A worker that dies breaks the pool; the next call builds a
new one, and the call that saw it break is retried once in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_PRELOAD = ("numpy", "twin.models.statistical.forecast")


def usable_cpus() -> int:
    """CPUs this process may run on (taskset/cgroup affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def auto_workers() -> int:
    """One worker per spare CPU, at most 4: the twin's own process keeps one core."""
    return min(4, usable_cpus() - 1)


def _by_reference(fn: Callable[..., Any]) -> bool:
    """Whether a worker process can import ``fn`` (a module-level function): local
    functions and test doubles run in a thread instead."""
    qual = getattr(fn, "__qualname__", "")
    return (
        bool(qual)
        and "<locals>" not in qual
        and getattr(fn, "__module__", "__main__") != "__main__"
    )


def _watch_parent(pid: int) -> None:
    """Worker initializer: exit when the twin that started the pool is gone (a SIGKILLed
    twin cannot shut its pool down, and a worker must never outlive it)."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # pid reused by another user's process: the twin is gone
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm() -> int:
    return os.getpid()


class WorkerPool:
    """A lazily started process pool (or threads when ``processes`` is 0)."""

    def __init__(self, processes: int = 0, preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
        self.processes = max(0, processes)
        self.preload = tuple(preload)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.calls = 0
        self.process_calls = 0
        self.restarts = 0
        self.seconds = 0.0

    @property
    def mode(self) -> str:
        return f"{self.processes} worker process(es)" if self.processes else "threads"

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(self.preload))
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),)
            )
        return self._pool

    def _start_blocking(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = self._executor()
        for f in [pool.submit(_warm) for _ in range(self.processes)]:
            f.result()
        return pool

    async def start(self) -> None:
        """Starts the workers (forkserver, imports) in a thread: the loop never waits for it."""
        if self.processes and self._pool is None:
            await asyncio.to_thread(self._start_blocking)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.calls += 1
        try:
            if not self.processes or not _by_reference(fn):
                return await asyncio.to_thread(fn, *args)
            try:
                executor = self._pool or await asyncio.to_thread(self._start_blocking)
                result = await loop.run_in_executor(executor, fn, *args)
                self.process_calls += 1
                return result
            except BrokenProcessPool:
                log.warning(
                    "a compute worker died; restarting the pool, this call runs in a thread"
                )
                self._discard()
                return await asyncio.to_thread(fn, *args)
        finally:
            self.seconds += loop.time() - t0

    def _discard(self) -> None:
        pool, self._pool = self._pool, None
        self.restarts += 1
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stops the workers now (pending calls cancelled, running ones killed); idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(5)

    def metrics(self) -> dict[str, float]:
        return {
            "compute_workers": float(self.processes),
            "compute_calls_total": float(self.calls),
            "compute_process_calls_total": float(self.process_calls),
            "compute_pool_restarts_total": float(self.restarts),
            "compute_seconds_total": self.seconds,
        }


_pool = WorkerPool(0)


def pool() -> WorkerPool:
    """The process-wide pool (threads until ``configure`` says otherwise)."""
    return _pool


def configure(processes: int) -> WorkerPool:
    """Replaces the process-wide pool; ``processes < 0`` means ``auto_workers()``."""
    global _pool
    _pool.close()
    _pool = WorkerPool(auto_workers() if processes < 0 else processes)
    return _pool


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Runs ``fn(*args)`` off the event loop, in a worker process when there are any."""
    return await _pool.run(fn, *args)
